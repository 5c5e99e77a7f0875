"""What moves through a chisel session: one ``chisel`` channel per tunnelled TCP
connection (``pipe.py``), SOCKS5 and stdio on a channel, and UDP datagrams as
gob streams (``udp/``).  ``endpoint.py`` is the half that both ends share.
"""
