"""UDP remotes: the listening side (``listener.py``), the dialing side (``exit.py``),
what both share (``common.py``) and the limits (``settings.py``, free of asyncssh
so that a ``--workers`` control process can build them).
"""
