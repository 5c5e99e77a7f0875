#!/usr/bin/env bash
# Build the container image (Dockerfile) and run in it: `cloud-connector demo`, a gateway
# (until its HEALTHCHECK says healthy), a connector configured by the environment
# alone (no arguments) that tunnels an HTTP service on this machine through that gateway,
# and the Armorcode-style `cloud-connector agent` line (issue 13): its tunnel carries a
# request, and a second agent on the same TUNNEL_PORT exits 1 saying the port is taken.
#
#   sudo packaging/build-image.sh
#
# Works where no container registry is reachable: unless CC_BASE_IMAGE names a base
# (python:3.11-slim where Docker Hub is reachable), the base is a Debian rootfs made
# with debootstrap (python3, venv, gcc, the Python headers) and `docker import`ed.  If
# no Docker daemon answers, one is started for this run only, with its own socket and
# data directory (overlay2 storage, or vfs where that fails; no iptables, no bridge:
# every container here uses the host's network, so loopback works), then stopped by its
# PID and its data removed.
# With a daemon that was already running, only this run's containers and image (and
# the imported base) are removed.  Takes ~4-6 minutes here, most of it the build stage.
#
# Environment:
#   CC_BASE_IMAGE     base image to build FROM (default: the local debootstrap base)
#   CC_IMAGE          tag of the image built and tested (cloud-connector:test)
#   CC_KEEP_IMAGE=1   keep the image and the imported base, with a daemon that was
#                     already running (one this run starts goes, with its data)
#   CC_DOCKER_STORAGE storage drivers to try for a dockerd started here ("overlay2 vfs")
#   CC_CHROOTS, CC_DEBIAN_SUITE, CC_DEBIAN_MIRROR   as in packaging/build-wheels.sh
set -euo pipefail

cd "$(dirname "$0")/.."
REPO="$PWD"
CHROOTS="${CC_CHROOTS:-/var/tmp/cc-chroots}"
SUITE="${CC_DEBIAN_SUITE:-bookworm}"
MIRROR="${CC_DEBIAN_MIRROR:-}"
IMAGE="${CC_IMAGE:-cloud-connector:test}"
BASE="${CC_BASE_IMAGE:-}"
started=$SECONDS
tag="cc-image-test-$$"

say() { printf '\n=== build-image.sh (%ss): %s\n' "$((SECONDS - started))" "$*"; }
die() { echo "build-image.sh: $*" >&2; exit 1; }

[[ "$(id -u)" == 0 ]] || die "dockerd, debootstrap and docker import need root"
case "$CHROOTS/" in "$REPO"/*) die "CC_CHROOTS must be outside the repository" ;; esac

missing=()
command -v docker >/dev/null || missing+=(docker.io)
command -v dockerd >/dev/null || missing+=(docker.io)
[[ -n "$BASE" ]] || command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v curl >/dev/null || missing+=(curl)
if [[ ${#missing[@]} -gt 0 ]]; then
    say "installing ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        $(printf '%s\n' "${missing[@]}" | sort -u)
fi

DOCKERD_PID=""
DOCKERD_DIR=""
SERVICE_PID=""
IMPORTED_BASE=""
cleanup() {
    local status=$?
    set +e
    docker ps -aq --filter "label=$tag" | xargs -r docker rm -f >/dev/null
    [[ -n "$SERVICE_PID" ]] && kill "$SERVICE_PID" 2>/dev/null
    if [[ -z "$DOCKERD_PID" && "${CC_KEEP_IMAGE:-}" != 1 ]]; then
        docker rmi -f "$IMAGE" >/dev/null 2>&1
        [[ -n "$IMPORTED_BASE" ]] && docker rmi -f "$IMPORTED_BASE" >/dev/null 2>&1
    fi
    if [[ -n "$DOCKERD_PID" ]]; then
        kill "$DOCKERD_PID" 2>/dev/null
        for _ in $(seq 1 30); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 1; done
        kill -9 "$DOCKERD_PID" 2>/dev/null
        # Its own mounts (the default netns' bind mount) can outlive it: undo them,
        # deepest first; then vfs leaves plain directories.
        awk -v d="$DOCKERD_DIR/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r \
            | xargs -r -n 1 umount -l
        if grep -q " $DOCKERD_DIR/" /proc/mounts; then
            echo "build-image.sh: mounts left in $DOCKERD_DIR" >&2
        else
            rm -rf "$DOCKERD_DIR"
        fi
    fi
    [[ -n "${WORK:-}" ]] && rm -rf "$WORK"
    exit $status
}
trap cleanup EXIT
WORK="$(mktemp -d)"

if docker info >/dev/null 2>&1; then
    say "using the running Docker daemon"
else
    DOCKERD_DIR="$(mktemp -d /var/tmp/cc-dockerd.XXXXXX)"
    export DOCKER_HOST="unix://$DOCKERD_DIR/docker.sock"
    # overlay2 where the filesystem allows it (a build step shares its layers: minutes
    # faster), else vfs (a full copy per step, works everywhere).
    for driver in ${CC_DOCKER_STORAGE:-overlay2 vfs}; do
        say "starting dockerd, $driver storage (data in $DOCKERD_DIR)"
        dockerd --storage-driver="$driver" --iptables=false --ip6tables=false --bridge=none \
            --data-root "$DOCKERD_DIR/data-$driver" --exec-root "$DOCKERD_DIR/exec" \
            --pidfile "$DOCKERD_DIR/dockerd.pid" --host "$DOCKER_HOST" \
            >"$DOCKERD_DIR/dockerd.log" 2>&1 &
        DOCKERD_PID=$!
        for _ in $(seq 1 60); do
            docker info >/dev/null 2>&1 && break
            kill -0 "$DOCKERD_PID" 2>/dev/null || break
            sleep 1
        done
        docker info >/dev/null 2>&1 && break
        tail -5 "$DOCKERD_DIR/dockerd.log"
        kill "$DOCKERD_PID" 2>/dev/null
        wait "$DOCKERD_PID" 2>/dev/null || true
        DOCKERD_PID=""
    done
    [[ -n "$DOCKERD_PID" ]] || die "dockerd did not start"
fi

build_args=()
if [[ -z "$BASE" ]]; then
    rootfs="$CHROOTS/$SUITE-amd64-image"
    if [[ ! -e "$rootfs/.cc-ready" ]]; then
        say "debootstrap $SUITE into $rootfs (the local base image)"
        rm -rf "$rootfs"
        mkdir -p "$CHROOTS"
        # shellcheck disable=SC2086  # an empty MIRROR must vanish: debootstrap's default
        debootstrap --variant=minbase \
            --include=python3,python3-venv,python3-dev,gcc,libc6-dev,ca-certificates \
            "$SUITE" "$rootfs" $MIRROR
        chroot "$rootfs" apt-get clean
        touch "$rootfs/.cc-ready"
    fi
    # The base trusts the CAs this machine added (a TLS-inspecting proxy before PyPI).
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
        chroot "$rootfs" update-ca-certificates >/dev/null 2>&1
    fi
    BASE="cc-base:$SUITE-$$"
    IMPORTED_BASE="$BASE"
    say "docker import $rootfs as $BASE"
    tar -C "$rootfs" --numeric-owner --exclude=./.cc-ready -c . | docker import - "$BASE" >/dev/null
    build_args+=(--build-arg PIP_CERT=/etc/ssl/certs/ca-certificates.crt)
fi

say "docker build --build-arg BASE_IMAGE=$BASE -t $IMAGE"
DOCKER_BUILDKIT=0 docker build --network host --label "$tag" --build-arg "BASE_IMAGE=$BASE" \
    "${build_args[@]}" -t "$IMAGE" . >"$WORK/build.log" 2>&1 \
    || { tail -40 "$WORK/build.log"; die "docker build failed"; }
grep -E "^(fast path|cloud-connector):" "$WORK/build.log" | sed 's/^/    /'
docker image inspect "$IMAGE" --format '    size {{.Size}} bytes, user {{.Config.User}}, exposed {{json .Config.ExposedPorts}}, entrypoint {{json .Config.Entrypoint}}, cmd {{json .Config.Cmd}}'

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
run() { docker run --label "$tag" --network host "$@"; }
wait_log() { # wait_log CONTAINER REGEX SECONDS
    local i
    for ((i = 0; i < $3 * 2; i++)); do
        docker logs "$1" 2>&1 | grep -qE "$2" && return 0
        sleep 0.5
    done
    docker logs "$1" 2>&1 | tail -20
    die "$1: no line matching '$2' within $3s"
}

say "in the image: version, user, and no arguments without configuration"
run --rm --entrypoint cloud-connector "$IMAGE" version | sed 's/^/    /'
user="$(run --rm --entrypoint id "$IMAGE" -u)"
[[ "$user" != 0 ]] || die "the image runs as root"
echo "    uid $user"
set +e
noconf="$(run --rm "$IMAGE" 2>&1)"
status=$?
set -e
echo "    no arguments, no CC_SERVER: status $status: $noconf"
[[ $status == 2 ]] || die "no configuration should be a usage error (status 2)"

say "in the image: cloud-connector demo"
run --rm --entrypoint cloud-connector "$IMAGE" demo | tee "$WORK/demo.txt" | sed 's/^/    /'
grep -q '^demo: success' "$WORK/demo.txt" || die "the demo failed"

say "in the image: a gateway, healthy by its HEALTHCHECK"
gw_port="$(free_port)"
gw="$tag-gateway"
run -d --name "$gw" --health-interval 1s --health-start-period 5s -e PORT="$gw_port" \
    -e AUTH=image:test --entrypoint cloud-connector "$IMAGE" server --host 127.0.0.1 --reverse >/dev/null
wait_log "$gw" "Listening on http://127.0.0.1:$gw_port" 30
for _ in $(seq 1 30); do
    health="$(docker inspect -f '{{.State.Health.Status}}' "$gw")"
    [[ "$health" == healthy ]] && break
    sleep 1
done
echo "    gateway on 127.0.0.1:$gw_port: $health"
[[ "$health" == healthy ]] || die "the gateway never became healthy"

say "in the image: a connector from the environment alone, tunnelling a service here"
svc_port="$(free_port)"
pub_port="$(free_port)"
mkdir -p "$WORK/www"
token="through-the-image-$RANDOM$RANDOM"
echo "$token" >"$WORK/www/token.txt"
python3 -m http.server --bind 127.0.0.1 --directory "$WORK/www" "$svc_port" >/dev/null 2>&1 &
SERVICE_PID=$!
conn="$tag-connector"
metrics_port="$(free_port)"
run -d --name "$conn" --health-interval 1s --health-start-period 5s \
    -e CC_SERVER="http://127.0.0.1:$gw_port/sg_image" \
    -e CC_REMOTES="R:$pub_port:127.0.0.1:$svc_port" -e AUTH=image:test \
    -e CC_METRICS="$metrics_port" "$IMAGE" >/dev/null
wait_log "$conn" "client: Connected" 30
docker logs "$conn" 2>&1 | sed 's/^/    connector: /' | head -5
got=""
for _ in $(seq 1 20); do
    got="$(curl -s --max-time 5 "http://127.0.0.1:$pub_port/token.txt" || true)"
    [[ "$got" == "$token" ]] && break
    sleep 0.5
done
echo "    GET http://127.0.0.1:$pub_port/token.txt (gateway port) -> $got"
[[ "$got" == "$token" ]] || die "the env-configured connector did not tunnel"
for _ in $(seq 1 30); do
    health="$(docker inspect -f '{{.State.Health.Status}}' "$conn")"
    [[ "$health" == healthy ]] && break
    sleep 1
done
echo "    connector (CC_METRICS=$metrics_port, its /ready): $health"
[[ "$health" == healthy ]] || die "the connector never became healthy"

say "in the image: the Armorcode-style agent line (cloud-connector agent), env only"
# As in README "cloud-connector agent": a gateway whose --tokens binds each agent's
# token to its tunnel port, and the agent from exactly the seed's variables (plus
# TUNNEL_HOST, so the tunnel port stays on this machine's loopback).
agent_gw_port="$(free_port)"
tunnel_port="$(free_port)"
agent_token="agent-$RANDOM$RANDOM$RANDOM"
other_token="other-$RANDOM$RANDOM$RANDOM"
python3 - "$WORK/tokens.json" "$tunnel_port" "$agent_token" "$other_token" <<'PY'
import json, sys
path, port, *tokens = sys.argv[1:]
with open(path, "w") as f:
    json.dump({token: [rf"R:127\.0\.0\.1:{port}"] for token in tokens}, f)
PY
chmod 644 "$WORK/tokens.json"
agw="$tag-agent-gateway"
run -d --name "$agw" -v "$WORK/tokens.json:/etc/cc-tokens.json:ro" -e PORT="$agent_gw_port" \
    --entrypoint cloud-connector "$IMAGE" server --host 127.0.0.1 --reverse \
    --tokens /etc/cc-tokens.json >/dev/null
wait_log "$agw" "Listening on http://127.0.0.1:$agent_gw_port" 30
root="$(curl -s --max-time 5 "http://127.0.0.1:$agent_gw_port/" || true)"
echo "    curl http://127.0.0.1:$agent_gw_port/ (the seed's connectivity check) -> $root"
[[ "$root" == "cloud-connector gateway "* ]] || die "the gateway's / should name it"
agent_env=(-e CLIENT_SIDE_DOMAIN=127.0.0.1 -e CLIENT_SIDE_PORT="$svc_port"
    -e SERVER_IP_DOMAIN="http://127.0.0.1:$agent_gw_port" -e TUNNEL_PORT="$tunnel_port"
    -e TUNNEL_HOST=127.0.0.1)
agent="$tag-agent"
run -d --name="$agent" --restart=on-failure:5 --entrypoint cloud-connector "${agent_env[@]}" \
    -e CLIENT_UUID=6f1c2d3e-0000-4000-8000-00000000000a -e TOKEN="$agent_token" \
    "$IMAGE" agent >/dev/null
wait_log "$agent" "client: Connected" 30
got=""
for _ in $(seq 1 20); do
    got="$(curl -s --max-time 5 "http://127.0.0.1:$tunnel_port/token.txt" || true)"
    [[ "$got" == "$token" ]] && break
    sleep 0.5
done
echo "    GET http://127.0.0.1:$tunnel_port/token.txt (TUNNEL_PORT) -> $got"
[[ "$got" == "$token" ]] || die "the agent did not tunnel"
# The seed's only help when TUNNEL_PORT is reused is an exited container; ours says why.
set +e
reused="$(run --rm --entrypoint cloud-connector "${agent_env[@]}" \
    -e CLIENT_UUID=6f1c2d3e-0000-4000-8000-00000000000b -e TOKEN="$other_token" \
    "$IMAGE" agent 2>&1)"
status=$?
set -e
echo "    a second agent on TUNNEL_PORT $tunnel_port: status $status"
grep -E "taken|cloud-connector agent" <<<"$reused" | tail -2 | sed 's/^/      /' || true
[[ $status == 1 ]] || die "an agent on a reused TUNNEL_PORT should exit 1"
grep -q "port $tunnel_port is taken by another client" <<<"$reused" \
    || die "an agent on a reused TUNNEL_PORT should say the port is taken"
[[ "$(curl -s --max-time 5 "http://127.0.0.1:$tunnel_port/token.txt" || true)" == "$token" ]] \
    || die "the first agent's tunnel should survive the second agent"

say "all passed: image $IMAGE from $BASE"
