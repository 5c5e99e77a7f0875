"""``python -m fuzz``: run fuzz targets under atheris (libFuzzer), one process per target.

    python -m fuzz --list
    python -m fuzz TARGET [libFuzzer flags...]        # e.g. -runs=1000000
    python -m fuzz --all --seconds 5                   # every target briefly (CI)
    python -m fuzz --all --runs 1000000                # the long run; prints counts

Each target gets a corpus directory (``--corpus DIR``, default a temporary one)
seeded from its examples and tests/vectors.  A crash leaves libFuzzer's
``crash-*`` file in the working directory: turn it into a regression vector.
"""

from __future__ import annotations

import argparse
import importlib
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["main"]

_INSTRUMENTED = (
    "cc.protocol.acl",
    "cc.protocol.config",
    "cc.protocol.hosts",
    "cc.protocol.http",
    "cc.protocol.keys",
    "cc.protocol.remote",
    "cc.protocol.udp",
    "cc.protocol.ws",
)
_DONE = re.compile(rb"Done (\d+) runs in (\d+) second")


def _run_one(name: str, extra: list[str]) -> int:
    """Inside the child: instrument our code, then hand control to libFuzzer."""
    import atheris

    with atheris.instrument_imports(include=["cc"]):
        for module in _INSTRUMENTED:  # the targets import these lazily
            importlib.import_module(module)
        from fuzz.targets import TARGETS
    target = TARGETS[name]
    atheris.Setup([sys.argv[0], *extra], target)
    atheris.Fuzz()
    return 0


def _seed_corpus(name: str, corpus: Path) -> None:
    from fuzz.targets import seeds_for

    corpus.mkdir(parents=True, exist_ok=True)
    for index, seed in enumerate(seeds_for(name)):
        (corpus / f"seed-{index}").write_bytes(seed)


def _run_all(names: list[str], flags: list[str], corpus_root: Path) -> int:
    failed = []
    print(f"{'target':<16} {'runs':>12} {'seconds':>8}  result")
    for name in names:
        corpus = corpus_root / name
        _seed_corpus(name, corpus)
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "fuzz", name, *flags, str(corpus)],
            capture_output=True,
            check=False,
        )
        found = _DONE.findall(proc.stderr)
        runs = int(found[-1][0]) if found else 0
        result = "ok" if proc.returncode == 0 else f"CRASH (exit {proc.returncode})"
        print(f"{name:<16} {runs:>12} {time.monotonic() - started:>8.1f}  {result}", flush=True)
        if proc.returncode != 0:
            failed.append(name)
            sys.stderr.write(proc.stderr.decode("utf-8", "replace")[-4000:])
    if failed:
        print(f"crashes in: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and not args[0].startswith("-"):
        return _run_one(args[0], args[1:])
    parser = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__.split("\n")[0])
    parser.add_argument("--list", action="store_true", help="name every target")
    parser.add_argument("--all", action="store_true", help="run every target in turn")
    parser.add_argument("--only", help="comma-separated targets for --all")
    parser.add_argument("--seconds", type=int, help="time per target (-max_total_time)")
    parser.add_argument("--runs", type=int, help="inputs per target (-runs)")
    parser.add_argument("--corpus", type=Path, help="keep corpora here (default: temporary)")
    opts = parser.parse_args(args)
    from fuzz.targets import TARGETS

    if opts.list or not opts.all:
        for name in TARGETS:
            print(name)
        return 0
    names = opts.only.split(",") if opts.only else list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s): {', '.join(unknown)}")
    flags = ["-rss_limit_mb=2048", "-timeout=20"]
    if opts.seconds:
        flags.append(f"-max_total_time={opts.seconds}")
    if opts.runs:
        flags.append(f"-runs={opts.runs}")
    if opts.corpus:
        return _run_all(names, flags, opts.corpus)
    with tempfile.TemporaryDirectory(prefix="cc-fuzz-") as tmp:
        return _run_all(names, flags, Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
