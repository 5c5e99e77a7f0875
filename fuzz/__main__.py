"""``python -m fuzz``: run fuzz targets under atheris (libFuzzer), one process per target.

    python -m fuzz --list
    python -m fuzz TARGET [libFuzzer flags...]        # e.g. -runs=1000000
    python -m fuzz --all --seconds 5                   # every target briefly (CI)
    python -m fuzz --all --runs 1000000 --max-len 1024 # the long run; prints counts

Each target gets a corpus directory (``--corpus DIR``, default a temporary one)
seeded from its examples, tests/vectors and its regression inputs, and libFuzzer's
output goes to ``DIR/TARGET.log``.  A crash leaves libFuzzer's ``crash-*`` file in
the working directory (``--artifacts DIR`` moves them): fix it and add the file
under tests/vectors/fuzz/TARGET/.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["main"]

_DONE = re.compile(rb"Done (\d+) runs in (\d+) second")
_PROGRESS = re.compile(rb"^#(\d+)\s", re.MULTILINE)
_ARTIFACT = re.compile(rb"Test unit written to (\S+)")


def _run_one(name: str, extra: list[str]) -> int:
    """Inside the child: instrument our code, then hand control to libFuzzer."""
    import atheris

    from fuzz.common import MODULES  # imports no cc module, so all are instrumented

    with atheris.instrument_imports(include=["cc"]):
        for module in MODULES:  # the targets import these lazily
            importlib.import_module(module)
    from fuzz.targets import TARGETS

    atheris.Setup([sys.argv[0], *extra], TARGETS[name])
    atheris.Fuzz()
    return 0


def _seed_corpus(name: str, corpus: Path) -> None:
    from fuzz.targets import seeds_for

    corpus.mkdir(parents=True, exist_ok=True)
    for index, seed in enumerate(seeds_for(name)):
        (corpus / f"seed-{index}").write_bytes(seed)


def _runs(stderr: bytes) -> int:
    """Inputs run: libFuzzer's closing count, or its last progress line after a crash."""
    done = _DONE.findall(stderr)
    if done:
        return int(done[-1][0])
    progress = _PROGRESS.findall(stderr)
    return int(progress[-1]) if progress else 0


def _run_all(names: list[str], flags: list[str], corpus_root: Path) -> int:
    """Each target in its own process; libFuzzer's output goes to ``<corpus>/<target>.log``."""
    failed = []
    print(f"{'target':<20} {'inputs':>10} {'seconds':>8}  result", flush=True)
    for name in names:
        corpus = corpus_root / name
        _seed_corpus(name, corpus)
        log = corpus_root / f"{name}.log"
        started = time.monotonic()
        with log.open("wb") as out:
            proc = subprocess.run(
                [sys.executable, "-m", "fuzz", name, *flags, str(corpus)],
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            )
        seconds = time.monotonic() - started
        output = log.read_bytes()
        result = "ok"
        if proc.returncode != 0:
            failed.append(name)
            artifact = _ARTIFACT.findall(output)
            where = artifact[-1].decode("utf-8", "replace") if artifact else "no artifact"
            result = f"CRASH (exit {proc.returncode}, {where})"
        print(f"{name:<20} {_runs(output):>10} {seconds:>8.1f}  {result}", flush=True)
        if proc.returncode != 0:
            sys.stderr.write(output.decode("utf-8", "replace")[-4000:])
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
    parser.add_argument("--max-len", type=int, help="longest input (-max_len; libFuzzer: 4096)")
    parser.add_argument("--corpus", type=Path, help="keep corpora here (default: temporary)")
    parser.add_argument("--artifacts", type=Path, help="write crash-* files here")
    opts = parser.parse_args(args)
    from fuzz.targets import TARGETS

    if opts.list or not opts.all:
        for name in TARGETS:
            print(name)
        return 0
    if importlib.util.find_spec("atheris") is None:
        print(
            "python -m fuzz: atheris is not installed for "
            f"{sys.executable}: pip install 'atheris>=2.3' (or '.[fuzz]')",
            file=sys.stderr,
        )
        return 2
    names = opts.only.split(",") if opts.only else list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s): {', '.join(unknown)}")
    flags = ["-rss_limit_mb=2048", "-timeout=20"]
    if opts.seconds:
        flags.append(f"-max_total_time={opts.seconds}")
    if opts.runs:
        flags.append(f"-runs={opts.runs}")
    if opts.max_len:
        flags.append(f"-max_len={opts.max_len}")
    if opts.artifacts:
        opts.artifacts.mkdir(parents=True, exist_ok=True)
        flags.append(f"-artifact_prefix={opts.artifacts.resolve()}/")
    if opts.corpus:
        return _run_all(names, flags, opts.corpus)
    with tempfile.TemporaryDirectory(prefix="cc-fuzz-") as tmp:
        return _run_all(names, flags, Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
