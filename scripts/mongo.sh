#!/usr/bin/env bash
# Starts or stops a MongoDB-wire-compatible test server for the `session-store-mongodb`
# tests: SecantusDB (PyPI `secantusdb`) in a virtualenv, in-memory storage, standalone
# topology, TTL monitor sweeping every second. The pinned release is a compiled extension with
# wheels for CPython 3.10 to 3.13 only (tags cp310 ... cp313, manylinux x86_64 and aarch64;
# Requires-Python >=3.10): the system's Python 3 serves on Debian 12 (3.11), Debian 13 (3.13)
# and Ubuntu 24.04 (3.12), with its venv module (Debian, Ubuntu: python3-venv).
#
#   scripts/mongo.sh start   # install (first time) and start; waits until it answers
#   scripts/mongo.sh stop    # stop the server started by `start`
#   scripts/mongo.sh status  # exit 0 if the server answers
#   scripts/mongo.sh url     # print the connection string for MONGODB_URL
#   scripts/mongo.sh venv-path  # print the virtualenv's folder
#   scripts/mongo.sh python  # print the interpreter the virtualenv would be made with (exit 1,
#                            # saying why, when there is none: scripts/provision.sh asks this)
#
# Environment (all optional):
#   MONGO_PORT               port (default 27917, away from a real mongod's 27017)
#   MONGO_TTL_SWEEP_SECONDS  TTL monitor interval (default 1; mongod's is 60)
#   SECANTUS_VENV            virtualenv (default ${XDG_CACHE_HOME:-$HOME/.cache}/session-store/secantus-venv)
#   MONGO_STATE_DIR          pid and log files (default <repo>/target/mongo-<port>)
#   PYTHON                   interpreter to build the venv with (default: the first of python3,
#                            python3.13, python3.12, python3.11, python3.10 that is one of the
#                            versions above and has venv and ensurepip)
#
# The tests read MONGODB_URL (default mongodb://127.0.0.1:27917/?directConnection=true).
set -euo pipefail

SECANTUS_VERSION="0.7.0b3"
# The CPython versions the pinned release has wheels for (its sdist needs a native build).
PYTHON_VERSIONS="3.10 3.11 3.12 3.13"
HOST="127.0.0.1"
PORT="${MONGO_PORT:-27917}"
SWEEP="${MONGO_TTL_SWEEP_SECONDS:-1}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Kept between runs and checkouts on one machine (reliability/src/servers.rs finds it there
# too); made anew when it holds another version than the pin.
VENV="${SECANTUS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/session-store/secantus-venv}"
STATE="${MONGO_STATE_DIR:-$ROOT/target/mongo-$PORT}"
PIDFILE="$STATE/secantus.pid"
LOGFILE="$STATE/secantus.log"
URL="mongodb://$HOST:$PORT/?directConnection=true"
START_DEADLINE_SECONDS="${MONGO_START_DEADLINE_SECONDS:-60}"

die() {
    echo "mongo.sh: ERROR: $*" >&2
    exit 1
}

# The server, launched through its Python API: the `secantusd-py` CLI has no flag for the
# TTL sweep interval (its config file has the key, but the CLI does not pass it on).
# shellcheck disable=SC2016 # Python source: nothing in it is for the shell to expand
LAUNCHER='
import signal, sys
from secantus.server import SecantusDBServer

host, port, sweep = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
server = SecantusDBServer(
    host=host,
    port=port,
    storage_path=":memory:",
    replica_set_name=None,  # standalone, as `secantusd-py --standalone`
    enable_test_commands=False,
    ttl_sweep_seconds=sweep,
)

def on_signal(signum, frame):
    server.stop()
    sys.exit(0)

signal.signal(signal.SIGINT, on_signal)
signal.signal(signal.SIGTERM, on_signal)
server.start()
print(f"secantus listening on {host}:{port}, ttl sweep every {sweep}s", flush=True)
server.wait()
'

# Answers a ping within about a second? (pymongo comes with secantusdb.)
answers() {
    "$VENV/bin/python" - "$URL" <<'EOF' >/dev/null 2>&1
import sys
from pymongo import MongoClient
client = MongoClient(sys.argv[1], serverSelectionTimeoutMS=1000, connectTimeoutMS=1000)
client.admin.command("ping")
EOF
}

running_pid() {
    [[ -f "$PIDFILE" ]] || return 1
    local pid
    pid="$(cat "$PIDFILE")"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

port_busy() {
    (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null
}

venv_version_ok() {
    "$VENV/bin/python" - "$SECANTUS_VERSION" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
sys.exit(version("secantusdb") != sys.argv[1])
EOF
}

# python_version PYTHON: its major.minor, or nothing when it does not run.
python_version() {
    "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null
}

# find_python: prints the interpreter to make the virtualenv with, or says why there is none.
find_python() {
    local candidates=(python3 python3.13 python3.12 python3.11 python3.10) python version
    local seen=() no_venv=""
    [[ -n "${PYTHON:-}" ]] && candidates=("$PYTHON")
    for python in "${candidates[@]}"; do
        command -v "$python" >/dev/null 2>&1 || continue
        version=$(python_version "$python")
        [[ -n "$version" ]] || continue
        seen+=("$python ($version)")
        [[ " $PYTHON_VERSIONS " == *" $version "* ]] || continue
        if "$python" -c 'import ensurepip, venv' 2>/dev/null; then
            echo "$python"
            return 0
        fi
        no_venv="$python ($version)"
    done
    if [[ -n "$no_venv" ]]; then
        echo "mongo.sh: ERROR: $no_venv lacks the venv module (Debian, Ubuntu: apt-get install python3-venv)" >&2
    else
        echo "mongo.sh: ERROR: secantusdb $SECANTUS_VERSION needs CPython ${PYTHON_VERSIONS// /, } (wheels only);" \
            "found: ${seen[*]:-none of ${candidates[*]}} (set PYTHON=/path/to/python3.X)" >&2
    fi
    return 1
}

ensure_venv() {
    if [[ -x "$VENV/bin/python" ]] &&
        "$VENV/bin/python" -c 'import secantus.server, pymongo' 2>/dev/null; then
        if venv_version_ok; then
            return
        fi
        echo "mongo.sh: $VENV holds another secantusdb than $SECANTUS_VERSION; making it anew" >&2
        rm -rf "$VENV"
    fi
    local python
    python=$(find_python) || exit 1
    echo "mongo.sh: creating $VENV with secantusdb==$SECANTUS_VERSION" >&2
    mkdir -p "$(dirname "$VENV")"
    "$python" -m venv "$VENV" || die "could not create a virtualenv at $VENV with $python"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "secantusdb==$SECANTUS_VERSION" ||
        die "pip could not install secantusdb==$SECANTUS_VERSION into $VENV"
    "$VENV/bin/python" -c 'import secantus.server, pymongo' ||
        die "secantusdb installed into $VENV but does not import"
}

start() {
    ensure_venv
    mkdir -p "$STATE"
    if pid="$(running_pid)"; then
        if answers; then
            echo "mongo.sh: already running (pid $pid) at $URL"
            return
        fi
        die "pid $pid from $PIDFILE is alive but $URL does not answer; run '$0 stop' first (log: $LOGFILE)"
    fi
    rm -f "$PIDFILE"
    if port_busy; then
        # Another checkout's server (its pid file lives in that checkout): reuse it when it
        # answers like a MongoDB server, as the tests only need one on this port.
        if answers; then
            echo "mongo.sh: a server started elsewhere already answers at $URL; using it"
            return
        fi
        die "port $PORT on $HOST is already in use by another process; set MONGO_PORT to a free port"
    fi
    # setsid: the server outlives this script and the shell that ran it.
    setsid "$VENV/bin/python" -c "$LAUNCHER" "$HOST" "$PORT" "$SWEEP" \
        >"$LOGFILE" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$PIDFILE"
    local deadline=$((SECONDS + START_DEADLINE_SECONDS))
    until answers; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$PIDFILE"
            echo "---- $LOGFILE ----" >&2
            tail -n 40 "$LOGFILE" >&2 || true
            die "SecantusDB exited during start-up"
        fi
        if ((SECONDS >= deadline)); then
            kill "$pid" 2>/dev/null || true
            rm -f "$PIDFILE"
            echo "---- $LOGFILE ----" >&2
            tail -n 40 "$LOGFILE" >&2 || true
            die "SecantusDB did not answer at $URL within ${START_DEADLINE_SECONDS}s"
        fi
        sleep 0.2
    done
    echo "mongo.sh: SecantusDB $SECANTUS_VERSION (pid $pid) answers at $URL (TTL sweep ${SWEEP}s)"
}

stop() {
    local pid
    if ! pid="$(running_pid)"; then
        rm -f "$PIDFILE"
        echo "mongo.sh: not running (no live pid in $PIDFILE)"
        return
    fi
    kill "$pid"
    local deadline=$((SECONDS + 15))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            echo "mongo.sh: pid $pid ignored SIGTERM for 15s; sending SIGKILL" >&2
            kill -9 "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
    rm -f "$PIDFILE"
    echo "mongo.sh: stopped (pid $pid)"
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status)
    if [[ -x "$VENV/bin/python" ]] && answers; then
        echo "mongo.sh: answering at $URL"
    else
        die "nothing answers at $URL"
    fi
    ;;
url) echo "$URL" ;;
venv-path) echo "$VENV" ;;
python) find_python ;;
*)
    echo "usage: $0 start|stop|status|url|venv-path|python" >&2
    exit 2
    ;;
esac
