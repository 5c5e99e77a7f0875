"""cloud-connector: the OutSystems Cloud Connector and a chisel-v3 gateway."""

from __future__ import annotations

__all__ = ["CHISEL_PROTOCOL", "__version__"]

__version__ = "0.1.0"

#: The WebSocket subprotocol and SSH version tag that chisel peers speak.
CHISEL_PROTOCOL = "chisel-v3"

#: Sent on the upgrade request and its 101 answer by our connector and gateway, so
#: that two of our peers can use larger SSH packets; chisel ignores it and never
#: sends it, so Go peers keep getting 32 KiB packets.
PEER_HEADER = "X-Cloud-Connector"
