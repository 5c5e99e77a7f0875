"""asyncssh, adapted to chisel: every private asyncssh touch lives in this package."""
