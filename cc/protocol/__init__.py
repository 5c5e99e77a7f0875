"""Sans-I/O protocol core: bytes in, events and bytes out. No sockets, no asyncio."""
