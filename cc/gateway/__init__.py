"""The gateway (``cloud-connector server``): the HTTP front that upgrades to chisel
sessions (``gateway.py``), one authenticated session with its reverse listeners
(``session.py``), reverse-port claims across workers (``ports.py``) and the
``--backend`` relay (``backend.py``).
"""
