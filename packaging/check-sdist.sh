#!/usr/bin/env bash
# The sdist is complete: build it from this tree, unpack it in a temporary directory,
# install it there (editable, in a fresh venv, with CC_REQUIRE_EXTENSIONS=1 and without
# Cython: the shipped cc/_fastpath.c is what compiles), and run the protocol and
# fast-path tests from the unpacked tree, fixtures and vectors included.
#
#   packaging/check-sdist.sh [pytest paths...]     (default: tests/protocol tests/fastpath)
#
# Needs PyPI (setuptools for the build, the dependencies and the test tools).
set -euo pipefail

cd "$(dirname "$0")/.."
started=$SECONDS
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(tests/protocol tests/fastpath)

python3 -m pip install -q --disable-pip-version-check build
python3 -m build --sdist --outdir "$tmp" >"$tmp/sdist.log" 2>&1 || { cat "$tmp/sdist.log"; exit 1; }
sdist="$(ls "$tmp"/cloud_connector-*.tar.gz)"
echo "check-sdist: $(basename "$sdist"): $(tar tzf "$sdist" | grep -c '/tests/.') files under tests/"
tar xzf "$sdist" -C "$tmp"
src="$(ls -d "$tmp"/cloud_connector-*/)"

python3 -m venv "$tmp/venv"
py="$tmp/venv/bin/python"
(cd "$src" && CC_REQUIRE_EXTENSIONS=1 "$py" -m pip install -q --disable-pip-version-check -e '.[test]')
if "$py" -c 'import Cython' 2>/dev/null; then
    echo "check-sdist: Cython is in the venv: the shipped C was not proven" >&2
    exit 1
fi
(cd "$src" && "$py" -m cc.cli.main version | sed -n 3p)
cd "$src"
CC_REQUIRE_EXTENSIONS=1 "$py" -m pytest -q -p no:cacheprovider "${targets[@]}"
echo "check-sdist: done in $((SECONDS - started))s"
