"""cloud-connector: the OutSystems Cloud Connector and a chisel-v3 gateway."""

from __future__ import annotations

__all__ = ["CHISEL_PROTOCOL", "__version__"]

__version__ = "0.1.0"

#: The WebSocket subprotocol and SSH version tag that chisel peers speak.
CHISEL_PROTOCOL = "chisel-v3"
