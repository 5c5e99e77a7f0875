"""The HTTP API gateway's I/O: the app listener, upstream connections, streams.

The decisions (targets, policies, framing, headers, scheduling) are sans-I/O in
``cc/protocol/apigw``; this package owns the sockets, channels and timers, apart
from the gateway's main port so that the two listeners stay independent.
"""

from .app import AppConfig, AppGateway
from .targetfile import LoadedTargets, load_targets

__all__ = ["AppConfig", "AppGateway", "LoadedTargets", "load_targets"]
