"""A worker's last words: why it stopped, for its control process to say once.

With ``--workers`` every worker shares the control process's stderr, so N workers
refused for the same reason (a wrong fingerprint, retries run out, a port in use)
used to print the same line N times.  Instead a worker that stops on purpose
writes its reason to a pipe the control process gave it (``REPORT_FD_ENV``); the
control process stops the others and prints the first reason, once.
"""

from __future__ import annotations

import contextlib
import os

__all__ = ["REPORT_FD_ENV", "ReportPipe", "report_to_control"]

#: Set in a worker's environment to the descriptor its reason goes to.
REPORT_FD_ENV = "CC_WORKER_REPORT_FD"
#: A reason is one line; more is not read.
MAX_REPORT = 4096


def report_to_control(message: str) -> bool:
    """In a worker: hand ``message`` to the control process; False if not a worker."""
    value = os.environ.get(REPORT_FD_ENV, "")
    if not value.isdigit():
        return False
    line = message.replace("\n", " ").encode("utf-8", "replace")[: MAX_REPORT - 1] + b"\n"
    try:
        os.write(int(value), line)
    except OSError:
        return False  # the control process is gone: say it on stderr instead
    return True


class ReportPipe:
    """The control process's end of one worker's report pipe.

    ``child_fd`` goes to the worker (``pass_fds``) and is closed here once it is
    started; after the worker exits, ``read()`` returns its reason or None.
    """

    def __init__(self) -> None:
        self._read_fd, self.child_fd = os.pipe()
        os.set_blocking(self._read_fd, False)

    def started(self) -> None:
        """The worker has its copy: ours must go, or the pipe never reaches EOF."""
        if self.child_fd >= 0:
            os.close(self.child_fd)
            self.child_fd = -1

    def read(self) -> str | None:
        """The worker's reason (it has exited, so nothing more will come), then closed."""
        data = b""
        with contextlib.suppress(BlockingIOError, OSError):
            while len(data) < MAX_REPORT:
                chunk = os.read(self._read_fd, MAX_REPORT)
                if not chunk:
                    break
                data += chunk
        self.close()
        text = data.decode("utf-8", "replace").strip()
        return text.splitlines()[0] if text else None

    def close(self) -> None:
        self.started()
        if self._read_fd >= 0:
            os.close(self._read_fd)
            self._read_fd = -1
