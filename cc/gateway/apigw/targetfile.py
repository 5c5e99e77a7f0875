"""``--targets FILE``: the parsed table and, per https target, its TLS context.

Contexts are made when the file is read, so that a ``ca`` file that is missing or
broken fails the (re)load like a syntax error does, and the last good version
stays in force.  A relative ``ca`` path is taken from the targets file's folder.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field

from cc.protocol.apigw.targets import Target, TargetTable, parse_targets
from cc.protocol.errors import TargetsError

__all__ = ["LoadedTargets", "load_targets", "parse_targets_file"]


@dataclass(frozen=True)
class LoadedTargets:
    table: TargetTable = field(default_factory=TargetTable)
    #: by public host, for https targets
    contexts: dict[str, ssl.SSLContext] = field(default_factory=dict)

    def context(self, target: Target) -> ssl.SSLContext | None:
        return self.contexts.get(target.public)


def _context(target: Target, folder: str) -> ssl.SSLContext:
    if target.ca is not None:
        path = os.path.join(folder, target.ca)
        try:
            context = ssl.create_default_context(cafile=path)
        except (OSError, ssl.SSLError) as exc:
            raise TargetsError(f"{target.public}: ca {target.ca!r}: {exc}") from None
    else:
        context = ssl.create_default_context()
    if target.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    return context


def parse_targets_file(data: bytes, folder: str) -> LoadedTargets:
    """Parse a targets file's bytes and make its TLS contexts; TargetsError on any fault."""
    table = parse_targets(data)
    contexts = {t.public: _context(t, folder) for t in table.targets if t.tls}
    return LoadedTargets(table, contexts)


def load_targets(path: str) -> LoadedTargets:
    """Read ``path`` now (startup); OSError or TargetsError."""
    with open(path, "rb") as fh:
        data = fh.read()
    return parse_targets_file(data, os.path.dirname(os.path.abspath(path)))
