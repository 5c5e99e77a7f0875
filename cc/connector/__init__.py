"""The connector (``cloud-connector client`` and ``outsystemscc``): what it is told
to do (``config.py``, free of asyncssh) and the reconnecting session loop
(``connector.py``).
"""
