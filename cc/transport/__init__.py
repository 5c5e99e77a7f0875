"""Reaching the other end: TCP or TLS, through a proxy, the HTTP upgrade, and the
WebSocket byte stream that carries the SSH session (``websocket.py``).

Nothing here knows about SSH or tunnels; the byte stream it yields is what the
SSH connection (``cc.ssh``) runs over.
"""
