"""The asyncio/uvloop I/O layer: transports, gateway, connector."""
