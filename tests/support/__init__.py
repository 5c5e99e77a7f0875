"""What the tests share: ports and echo services, child processes, the in-process
harness, real peers, certificates, vectors.  One copy of each; fixtures that use
them live in the conftest.py files.
"""
