"""Process plumbing for every command: the event loop, signals and pid file
(``process.py``), the heap trimmer (``heap.py``), file reloads (``filewatch.py``)
and the ``--workers`` supervisor (``supervisor.py``).
"""
