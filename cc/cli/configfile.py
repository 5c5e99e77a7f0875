"""``--config FILE``: a command's options from a TOML file, one key per long flag.

The file is the layer under the environment and the command line (flags >
environment > file > built-in defaults), so a service keeps its settings in one
reviewed file and an operator still overrides one of them at the prompt::

    server = "https://gateway.example.com"
    remotes = ["R:8081:192.168.0.3:8393"]
    keepalive-timeout = "10s"
    header = ["Token: ..."]

A mistake is found before anything starts and named with its line: an unknown
key (with the nearest known one), a value of the wrong TOML type, a value the
option refuses.  Relative paths in the file (``authfile``, ``tls-cert`` ...) are
taken from the file's directory, not from wherever the service happens to start.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ConfigFileError", "FileOption", "load_config_file"]


class ConfigFileError(Exception):
    """The file cannot be read or holds something the command does not take."""


@dataclass(frozen=True)
class FileOption:
    """How one option is written in the file.

    ``kind``: ``value`` (one scalar), ``flag`` (true/false), ``list`` (an array of
    strings).  ``types``: the TOML scalar types a ``value`` takes.  ``convert``:
    the option's argparse type, which checks the value.  ``path``: relative values
    are resolved against the file's directory.  ``example``: shown with a type error.
    """

    key: str
    kind: str
    types: tuple[type, ...] = (str,)
    convert: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None
    path: bool = False
    #: a valid value, shown when the type is wrong (the option's default)
    example: str | None = None


_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false", list: "an array"}


def _toml_type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"  # dates and times


def _line_of(text: str, key: str) -> int | None:
    """The line where ``key`` is assigned (tomllib keeps no positions)."""
    quoted = re.escape(key)
    pattern = re.compile(rf"^\s*(?:{quoted}|\"{quoted}\"|'{quoted}')\s*[=.\[]")
    for number, line in enumerate(text.splitlines(), 1):
        if pattern.match(line):
            return number
    header = re.compile(rf"^\s*\[+\s*(?:{quoted}|\"{quoted}\"|'{quoted}')\s*[\].]")
    for number, line in enumerate(text.splitlines(), 1):
        if header.match(line):
            return number
    return None


def load_config_file(path: str, options: Mapping[str, FileOption]) -> dict[str, Any]:
    """Read ``path`` and check every key against ``options``; key -> checked value.

    Values come back as the option would hold them: converted by its type, paths
    resolved, arrays as lists of strings, flags as bools.
    """
    import difflib  # imported here: only --config needs them, and every process
    import tomllib  # would carry them (idle memory, README "Performance")

    file = Path(path)
    try:
        text = file.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigFileError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigFileError(f"{path}: not UTF-8 text") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"{path}: not valid TOML: {exc}") from None

    def where(key: str) -> str:
        line = _line_of(text, key)
        return f"{path}:{line}" if line is not None else path

    values: dict[str, Any] = {}
    for key, value in data.items():
        option = options.get(key)
        if option is None:
            near = difflib.get_close_matches(key.replace("_", "-"), list(options), n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            raise ConfigFileError(f"{where(key)}: unknown key '{key}'{hint}")
        values[key] = _check(option, value, where(key), file.parent)
    return values


def _check(option: FileOption, value: object, where: str, base: Path) -> Any:
    key = option.key
    if option.kind == "flag":
        if not isinstance(value, bool):
            raise ConfigFileError(
                f"{where}: '{key}' must be true or false, not {_toml_type(value)}"
            )
        return value
    if option.kind == "list":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigFileError(
                f"{where}: '{key}' must be an array of strings, not {_toml_type(value)}"
            )
        return list(value)
    # bool is an int in Python; TOML's true is never a number or a string here.
    if isinstance(value, bool) or not isinstance(value, option.types):
        wanted = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in option.types)
        if option.example is not None:
            quote = "" if option.types == (int,) else '"'
            wanted += f" (like {quote}{option.example}{quote})"
        raise ConfigFileError(f"{where}: '{key}' must be {wanted}, not {_toml_type(value)}")
    text = str(value)
    if option.choices is not None and text not in option.choices:
        raise ConfigFileError(
            f"{where}: '{key}' must be one of {', '.join(option.choices)}, not {text!r}"
        )
    if option.path and text and not text.startswith("ck-"):
        text = str(base / text) if not Path(text).is_absolute() else text
    if option.convert is None:
        return text
    try:
        return option.convert(text)
    except (argparse.ArgumentTypeError, ValueError) as exc:
        raise ConfigFileError(f"{where}: '{key}': {exc}") from None
