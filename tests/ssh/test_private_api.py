"""cc.ssh's list of private asyncssh names matches its code and the installed asyncssh.

The sources of ``cc/ssh`` are walked with ``ast``: every ``._name`` attribute used,
every ``_name`` method defined on a class (an override, or a handler asyncssh finds by
name) and every import of an asyncssh name that ``asyncssh`` itself does not export
must be in ``PRIVATE_NAMES`` / ``PRIVATE_HOOKS`` / ``PRIVATE_IMPORTS``, and nothing may
be listed that the code no longer uses.  Our own attributes on asyncssh objects start
with ``_cc_`` and are not asyncssh's.  Then each listed name is looked up on live
objects of plain asyncssh (a real client/server pair on 127.0.0.1, no cc code).
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import inspect
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncssh
import pytest

import cc.ssh
from cc.ssh import PRIVATE_HOOKS, PRIVATE_IMPORTS, PRIVATE_NAMES

__all__: list[str] = []

SSH_DIR = Path(cc.ssh.__file__).parent


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith(("__", "_cc_"))


def _resolve(dotted: str) -> Any:
    """The module or module attribute named ``dotted``."""
    try:
        return importlib.import_module(dotted)
    except ImportError:
        module, _, attr = dotted.rpartition(".")
        return getattr(importlib.import_module(module), attr)


def _collect() -> tuple[set[str], set[str]]:
    """(private attribute and method names, private asyncssh imports) used in cc/ssh."""
    names: set[str] = set()
    imports: set[str] = set()
    for path in sorted(SSH_DIR.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        module_aliases: dict[str, str] = {}  # local name -> internal asyncssh module
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("asyncssh"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    if isinstance(_resolve(full), ModuleType):
                        module_aliases[alias.asname or alias.name] = full
                        imports.add(full)
                    elif node.module != "asyncssh" and alias.name not in asyncssh.__all__:
                        imports.add(full)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("asyncssh."):
                        imports.add(alias.name)
            elif isinstance(node, ast.Attribute):
                if _is_private(node.attr):
                    names.add(node.attr)
                elif isinstance(node.value, ast.Name) and node.value.id in module_aliases:
                    imports.add(f"{module_aliases[node.value.id]}.{node.attr}")
            elif isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and _is_private(
                        item.name
                    ):
                        names.add(item.name)
    return names, imports


def test_the_walk_sees_known_touches() -> None:
    """The collector itself works: names every version of the code has used are found."""
    names, imports = _collect()
    assert {"_inpbuf", "_recv_version", "_max_recv_pktlen", "_process_chisel_open"} <= names
    assert {"asyncssh.packet.SSHPacket", "asyncssh.encryption.Encryption"} <= imports
    assert "_cc_rx" not in names


def test_every_private_name_used_is_listed_and_every_listed_name_used() -> None:
    names, _ = _collect()
    listed = set(PRIVATE_NAMES) | set(PRIVATE_HOOKS)
    assert sorted(names - listed) == [], "used in cc/ssh but missing from PRIVATE_NAMES"
    assert sorted(listed - names) == [], "listed but no longer used in cc/ssh"


def test_every_private_import_is_listed() -> None:
    _, imports = _collect()
    assert sorted(imports - PRIVATE_IMPORTS) == [], "imported but missing from PRIVATE_IMPORTS"
    assert sorted(PRIVATE_IMPORTS - imports) == [], "listed but no longer imported"


@pytest.mark.parametrize("dotted", sorted(PRIVATE_IMPORTS))
def test_private_imports_exist(dotted: str) -> None:
    _resolve(dotted)


def test_the_docstring_names_every_private_name() -> None:
    doc = cc.ssh.__doc__ or ""
    missing = [n for n in [*PRIVATE_NAMES, *PRIVATE_HOOKS] if f"``{n}``" not in doc]
    assert missing == []


@pytest.mark.parametrize("hook", sorted(PRIVATE_HOOKS))
def test_hooks_are_still_looked_up_by_name(hook: str) -> None:
    """asyncssh's dispatcher builds ``_process_<name>_open`` / ``_global_request`` names."""
    dispatcher = getattr(asyncssh.SSHClientConnection, PRIVATE_HOOKS[hook])
    suffix = "_open'" if hook.endswith("_open") else "_global_request'"
    source = inspect.getsource(dispatcher)
    assert "'_process_' + map_handler_name(" in source
    assert suffix in source


class _NoAuthServer(asyncssh.SSHServer):
    conns: list[asyncssh.SSHServerConnection] = []

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conns.append(conn)

    def begin_auth(self, username: str) -> bool:
        return False


async def test_listed_names_exist_on_live_asyncssh_objects() -> None:
    key = asyncssh.generate_private_key("ecdsa-sha2-nistp256")
    server = await asyncssh.listen(
        "127.0.0.1", 0, server_host_keys=[key], server_factory=_NoAuthServer, config=None
    )
    port = server.sockets[0].getsockname()[1]
    try:
        async with (
            asyncio.timeout(10),
            asyncssh.connect(
                "127.0.0.1",
                port,
                known_hosts=None,
                username="test",
                client_keys=None,
                agent_path=None,
                config=None,
            ) as client,
        ):
            server_conn = _NoAuthServer.conns[-1]
            channel = client.create_tcp_channel()
            owners: dict[str, list[object]] = {
                "connection": [client, server_conn],
                "client connection": [client],
                "channel": [channel],
            }
            missing = []
            for name, owner in PRIVATE_NAMES.items():
                objects = owners.get(owner) or [_resolve(owner)]
                missing += [f"{owner}.{name}" for obj in objects if not hasattr(obj, name)]
            assert missing == []
            for dispatcher in set(PRIVATE_HOOKS.values()):
                assert hasattr(client, dispatcher) and hasattr(server_conn, dispatcher)
    finally:
        server.close()
        await server.wait_closed()


def test_no_other_package_imports_asyncssh_internals() -> None:
    """Outside cc/ssh, asyncssh is used through its top-level package only."""
    offenders = []
    for path in sorted(SSH_DIR.parent.rglob("*.py")):
        if SSH_DIR in path.parents:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("asyncssh."):
                offenders.append(f"{path.name}:{node.lineno} from {node.module}")
            elif isinstance(node, ast.Import):
                offenders += [
                    f"{path.name}:{node.lineno} import {alias.name}"
                    for alias in node.names
                    if alias.name.startswith("asyncssh.")
                ]
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "asyncssh"
                and node.attr.startswith("_")
            ):
                offenders.append(f"{path.name}:{node.lineno} asyncssh.{node.attr}")
    assert offenders == []
