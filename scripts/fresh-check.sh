#!/usr/bin/env bash
# Checks the README's two set-up commands on a bare Debian machine that has only Rust:
#
#   1. builds a minimal Debian root with debootstrap (variant minbase, plus what Rust itself
#      needs on Linux, gcc and libc6-dev as its linker, and curl and ca-certificates to answer
#      the demo); nothing of PostgreSQL, Redis, MariaDB, Node.js or Python is in it;
#   2. mounts this machine's Rust toolchain (rustup's RUSTUP_HOME and CARGO_HOME/bin) read-only,
#      and its cargo registry cache read-only under an overlay (cargo writes its extracted
#      sources and index cache there; the writes stay in FRESH_ROOT);
#   3. copies a clean clone of this repository's HEAD in;
#   4. runs, as root in that root, in a network namespace of its own (its loopback ports are
#      its own, so its servers never meet this machine's on 5432, 6379, 3306, ...):
#        cargo run --release -p session-demo     answered with curl (visit 1, then visit 2)
#        bash scripts/test.sh                    installs the services with apt, starts, passes
#
# The namespace has no network; the package registries (Debian, PyPI, npm, crates.io) reach
# it through a relay: a small process that listens on 127.0.2.N inside the namespace and
# connects to the registry's host from this machine's network, with /etc/hosts in the root
# naming those addresses. Nothing else is reachable, and this machine's network, routes and
# firewall are left alone. The root also gets this machine's trusted CA certificates and the
# variables that point tools at them (SSL_CERT_FILE, PIP_CERT, ...), as a developer's machine
# on the same network would have.
#
# Not run by CI: it takes 20 to 40 minutes on 2 cores (two full builds of the workspace).
# As root on a Debian or Ubuntu machine, with debootstrap (apt-get install debootstrap):
#
#   sudo bash scripts/fresh-check.sh                      # Debian 12 (bookworm)
#   sudo FRESH_SUITE=trixie bash scripts/fresh-check.sh   # Debian 13
#
# Environment: FRESH_ROOT (working folder, default /var/tmp/session-store-fresh; the root is
# FRESH_ROOT/root, removed and built anew on each run, the log is FRESH_ROOT/fresh-check.log),
# FRESH_SUITE (a Debian suite the mirror has and this debootstrap knows; default bookworm), FRESH_MIRROR (default http://deb.debian.org/debian),
# FRESH_COMMAND (run this in the root instead of the two commands, when debugging a step, e.g.
# 'bash scripts/provision.sh && bash scripts/services.sh').
# Mounts, the namespace, the relay and every process started in the root are removed on exit,
# on failure too.
set -euo pipefail
# One brace group, read whole before it runs: editing this file during a run changes nothing.
{

REPO=$(cd "$(dirname "$0")/.." && pwd)
REV=$(git -C "$REPO" rev-parse HEAD)
FRESH=$(realpath -m "${FRESH_ROOT:-/var/tmp/session-store-fresh}")
SUITE=${FRESH_SUITE:-bookworm}
MIRROR=${FRESH_MIRROR:-http://deb.debian.org/debian}
ROOT="$FRESH/root"
NS="session-store-fresh-$$"
LOG="$FRESH/fresh-check.log"
HOST_RUSTUP=${RUSTUP_HOME:-$HOME/.rustup}
HOST_CARGO=${CARGO_HOME:-$HOME/.cargo}
# Registry hosts: relay address inside the namespace, port.
RELAYED=(
    "deb.debian.org 127.0.2.1 80"
    "pypi.org 127.0.2.2 443"
    "files.pythonhosted.org 127.0.2.3 443"
    "registry.npmjs.org 127.0.2.4 443"
    "index.crates.io 127.0.2.5 443"
    "static.crates.io 127.0.2.6 443"
)

say() { printf '[fresh-check] %s\n' "$*" >&2; }
die() { printf '[fresh-check] ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root: sudo bash scripts/fresh-check.sh"
for tool in debootstrap ip python3 git mount chroot; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install debootstrap iproute2 python3 git)"
done
[ -x "$HOST_CARGO/bin/cargo" ] || die "no cargo at $HOST_CARGO/bin (set CARGO_HOME)"
[ -d "$HOST_RUSTUP/toolchains" ] || die "no rustup toolchains at $HOST_RUSTUP (set RUSTUP_HOME)"
if [ -n "$(git -C "$REPO" status --porcelain --untracked-files=no)" ]; then
    say "note: uncommitted changes are not checked, only HEAD ($(git -C "$REPO" rev-parse --short HEAD))"
fi

mounted_under() { awk -v p="$1/" 'index($5 "/", p) == 1 { print $5 }' /proc/self/mountinfo; }

relay_pid=""
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
    local status=$? pid
    set +e
    # Every process whose root is the fresh root: the demo, the servers, the tests.
    for pid in /proc/[0-9]*; do
        [ "$(readlink "$pid/root" 2>/dev/null)" = "$ROOT" ] && kill -9 "${pid#/proc/}" 2>/dev/null
    done
    [ -n "$relay_pid" ] && kill "$relay_pid" 2>/dev/null
    sleep 1
    # Deepest first.
    mounted_under "$ROOT" | sort -r | while read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; done
    mounted_under "$FRESH/mnt" | sort -r | while read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; done
    ip netns del "$NS" 2>/dev/null
    if [ -n "$(mounted_under "$FRESH")" ]; then
        say "WARNING: still mounted under $FRESH: $(mounted_under "$FRESH" | tr '\n' ' ')"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$FRESH"
exec > >(tee "$LOG") 2>&1
started=$SECONDS
say "$(date -u '+%Y-%m-%d %H:%M:%S UTC'): $SUITE root in $ROOT, repository $REPO at ${REV:0:7}"

[ -z "$(mounted_under "$FRESH")" ] || die "something is still mounted under $FRESH: $(mounted_under "$FRESH" | tr '\n' ' ')"
rm -rf "$ROOT" "$FRESH/registry-upper" "$FRESH/registry-work"

say "debootstrap $SUITE (minbase + gcc libc6-dev curl ca-certificates)"
mkdir -p "$FRESH/debs"
debootstrap --variant=minbase --cache-dir="$FRESH/debs" \
    --include=ca-certificates,curl,gcc,libc6-dev "$SUITE" "$ROOT" "$MIRROR" >"$FRESH/debootstrap.log" 2>&1 \
    || { tail -n 20 "$FRESH/debootstrap.log"; die "debootstrap failed (log: $FRESH/debootstrap.log)"; }

# The root's settings, as on a developer's machine: package sources, no init system to start
# services at install time (policy-rc.d 101, as usual in a chroot), the registries' names.
security=${MIRROR%/debian}/debian-security
cat >"$ROOT/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $security $SUITE-security main
EOF
# This machine's apt settings for reaching its mirror (a snapshot mirror needs
# Acquire::Check-Valid-Until "false", say).
grep -l '^Acquire::' /etc/apt/apt.conf.d/* 2>/dev/null | while read -r conf; do
    cp "$conf" "$ROOT/etc/apt/apt.conf.d/"
done
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod +x "$ROOT/usr/sbin/policy-rc.d"
{
    echo "127.0.0.1 localhost"
    echo "::1 localhost ip6-localhost ip6-loopback"
    for entry in "${RELAYED[@]}"; do
        read -r host addr _ <<<"$entry"
        echo "$addr $host"
    done
} >"$ROOT/etc/hosts"
: >"$ROOT/etc/resolv.conf"
# This machine's trusted CAs (a registry mirror or proxy may present its own).
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/usr/local/share/ca-certificates/this-machine.crt"
chroot "$ROOT" update-ca-certificates >/dev/null

say "clean clone of ${REV:0:7}"
git clone --quiet --no-local "$REPO" "$ROOT/root/session-store"
git -C "$ROOT/root/session-store" checkout --quiet --detach "$REV"

say "mounts: /proc /sys /dev, toolchain and registry read-only"
mount -t proc proc "$ROOT/proc"
mount -t sysfs sysfs "$ROOT/sys"
mount --rbind /dev "$ROOT/dev"
mount --make-rslave "$ROOT/dev"
mount -t tmpfs tmpfs "$ROOT/run"
ro_bind() { mkdir -p "$2"; mount --bind "$1" "$2"; mount -o remount,bind,ro "$2"; }
ro_bind "$HOST_RUSTUP" "$ROOT/root/.rustup"
ro_bind "$HOST_CARGO/bin" "$ROOT/root/.cargo/bin"
mkdir -p "$HOST_CARGO/registry" "$FRESH/registry-upper" "$FRESH/registry-work" "$ROOT/root/.cargo/registry"
ro_bind "$HOST_CARGO/registry" "$FRESH/mnt/registry"
mount -t overlay overlay \
    -o "lowerdir=$FRESH/mnt/registry,upperdir=$FRESH/registry-upper,workdir=$FRESH/registry-work" \
    "$ROOT/root/.cargo/registry"

say "network namespace $NS (loopback only) and the registry relay"
ip netns add "$NS"
ip -n "$NS" link set lo up
relay_args=()
for entry in "${RELAYED[@]}"; do
    read -r host addr port <<<"$entry"
    relay_args+=("$addr:$port=$host:$port")
done
python3 - "/run/netns/$NS" "${relay_args[@]}" >"$FRESH/relay.log" 2>&1 <<'PY' &
# Listens inside the namespace (setns for the bind), connects from this machine's network.
import ctypes, os, socket, sys, threading
libc = ctypes.CDLL(None, use_errno=True)
def setns(fd):
    if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
        raise OSError(ctypes.get_errno(), "setns")
home, inside = os.open("/proc/self/ns/net", os.O_RDONLY), os.open(sys.argv[1], os.O_RDONLY)
listeners = []
setns(inside)
for arg in sys.argv[2:]:
    local, remote = arg.split("=")
    addr, port = local.rsplit(":", 1)
    host, rport = remote.rsplit(":", 1)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, int(port)))
    s.listen(128)
    listeners.append((s, host, int(rport)))
setns(home)
def pump(src, dst):
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
def handle(conn, host, port):
    try:
        upstream = socket.create_connection((host, port), timeout=60)
    except OSError as e:
        print(f"relay: {host}:{port}: {e}", flush=True)
        conn.close()
        return
    upstream.settimeout(None)
    back = threading.Thread(target=pump, args=(upstream, conn), daemon=True)
    back.start()
    pump(conn, upstream)
    back.join()
    conn.close()
    upstream.close()
def serve(s, host, port):
    while True:
        conn, _ = s.accept()
        threading.Thread(target=handle, args=(conn, host, port), daemon=True).start()
threads = [threading.Thread(target=serve, args=l, daemon=True) for l in listeners]
for t in threads:
    t.start()
print("relay ready", flush=True)
for t in threads:
    t.join()
PY
relay_pid=$!
for _ in $(seq 50); do grep -q 'relay ready' "$FRESH/relay.log" && break; sleep 0.2; done
grep -q 'relay ready' "$FRESH/relay.log" || die "the relay did not start: $(cat "$FRESH/relay.log")"

# What runs inside: the README's two commands, as a developer would type them.
INNER=$(cat <<'SH'
set -euo pipefail
cd /root/session-store
t0=$SECONDS
echo "== [fresh] cargo run --release -p session-demo"
cargo run --release -p session-demo >/root/demo.log 2>&1 &
demo=$!
until curl -sf -o /dev/null http://127.0.0.1:3000/; do
    kill -0 "$demo" 2>/dev/null || { tail -n 40 /root/demo.log; echo "== [fresh] the demo exited"; exit 1; }
    sleep 2
done
rm -f /root/jar
first=$(curl -sS -c /root/jar -b /root/jar http://127.0.0.1:3000/)
second=$(curl -sS -c /root/jar -b /root/jar http://127.0.0.1:3000/)
echo "$first"
echo "$second"
# cargo and the server it started.
kill $(cat /proc/"$demo"/task/*/children 2>/dev/null) "$demo" 2>/dev/null || true
wait "$demo" 2>/dev/null || true
[ "$first" = "In this session, you have visited this website 1 time(s)." ] || { echo "== [fresh] demo: unexpected first answer"; exit 1; }
[ "$second" = "In this session, you have visited this website 2 time(s)." ] || { echo "== [fresh] demo: unexpected second answer"; exit 1; }
echo "== [fresh] demo answered after $((SECONDS - t0))s"
t1=$SECONDS
echo "== [fresh] bash scripts/test.sh"
bash scripts/test.sh
echo "== [fresh] tests passed after $((SECONDS - t1))s"
SH
)
INNER=${FRESH_COMMAND:-$INNER}
env_args=(HOME=/root LANG=C.UTF-8 TERM=dumb RUSTUP_AUTO_INSTALL=0
    PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
for var in SSL_CERT_FILE SSL_CERT_DIR CURL_CA_BUNDLE REQUESTS_CA_BUNDLE PIP_CERT NODE_EXTRA_CA_CERTS \
    CARGO_HTTP_CAINFO PIP_DEFAULT_TIMEOUT; do
    [ -n "${!var:-}" ] && env_args+=("$var=${!var}")
done
say "running the README's two commands in the root (nice 10)"
run_started=$SECONDS
status=0
ip netns exec "$NS" nice -n 10 chroot "$ROOT" /usr/bin/env -i "${env_args[@]}" /bin/bash -c "cd /root/session-store && $INNER" || status=$?
took=$((SECONDS - started))
if [ "$status" -eq 0 ]; then
    say "PASS on $(date -u '+%Y-%m-%d'): the commands in the root took $(((SECONDS - run_started) / 60)) min, all in $((took / 60)) min $((took % 60)) s (log: $LOG)"
else
    say "FAIL (exit $status) after $((took / 60)) min $((took % 60)) s (log: $LOG)"
fi
exit "$status"
}
