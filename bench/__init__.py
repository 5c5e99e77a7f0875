"""Side-by-side benchmark of the tunnel paths: ``python -m bench --help``.

One invocation starts, on 127.0.0.1 only, each path in turn (a direct kernel connection
as the ceiling, our gateway and connector, chisel, our connector against chisel, OpenSSH
``ssh -R``), drives the same workloads through it, prints a table and writes JSON.

Modules, one concept each:

- ``peers``: starting, waiting for and stopping child programs (sshd, iperf3, ...);
- ``services``: the small target programs the tunnels carry traffic to;
- ``paths``: how each tunnel path is brought up between a client and those targets;
- ``usage``: CPU seconds and RSS of the tunnel's processes;
- ``workloads``: the measurements (bulk, latency, connection rate, idle connections);
- ``machine``: what the machine and the software under test are;
- ``report``: the table, the ratios to chisel and the JSON;
- ``run``: the command line and the order of things.
"""
