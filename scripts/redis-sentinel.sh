#!/usr/bin/env bash
# Starts or stops a Redis Sentinel setup on loopback for the tests of `stores/redis`
# (REDIS_SENTINEL_URLS, REDIS_SENTINEL_MASTER): one master, one replica (or more) and three
# sentinels (quorum 2) monitoring the master under the name `mymaster`.
#
#   scripts/redis-sentinel.sh start   # idempotent: leaves a healthy running setup alone
#   scripts/redis-sentinel.sh stop    # stops every process and deletes the folders
#   scripts/redis-sentinel.sh revive NAME  # starts node NAME (master, replica, replica2, ...)
#                                          # again on its port after it died; the sentinels
#                                          # make it a replica of the current master
#
# Environment:
#   REDIS_SENTINEL_DATA_PORT  master port (default 6390; the replicas use the next ones)
#   REDIS_SENTINEL_REPLICAS   replicas (default 1)
#   REDIS_SENTINEL_DOWN_AFTER sentinel down-after-milliseconds (default 5000)
#   REDIS_SENTINEL_PORT       first sentinel port (default 26390; then +1, +2)
#   REDIS_SENTINEL_MASTER     master name (default mymaster)
#   REDIS_SENTINEL_DIR        folders (default ${TMPDIR:-/tmp}/session-store-redis-sentinel)
#   REDIS_SENTINEL_TIMEOUT    seconds to wait for the setup (default 60)
set -euo pipefail

DATA_PORT=${REDIS_SENTINEL_DATA_PORT:-6390}
SENTINEL_PORT=${REDIS_SENTINEL_PORT:-26390}
MASTER=${REDIS_SENTINEL_MASTER:-mymaster}
DIR=${REDIS_SENTINEL_DIR:-${TMPDIR:-/tmp}/session-store-redis-sentinel}
TIMEOUT=${REDIS_SENTINEL_TIMEOUT:-60}
REPLICAS=${REDIS_SENTINEL_REPLICAS:-1}
DOWN_AFTER=${REDIS_SENTINEL_DOWN_AFTER:-5000}
MASTER_PORT=$DATA_PORT
REPLICA_PORTS=()
for ((i = 1; i <= REPLICAS; i++)); do REPLICA_PORTS+=($((DATA_PORT + i))); done
SENTINELS=($SENTINEL_PORT $((SENTINEL_PORT + 1)) $((SENTINEL_PORT + 2)))
ALL_PORTS=($MASTER_PORT "${REPLICA_PORTS[@]}" "${SENTINELS[@]}")

die() { echo "redis-sentinel: $*" >&2; exit 1; }
say() { echo "redis-sentinel: $*" >&2; }
need() { command -v "$1" >/dev/null 2>&1 || die "'$1' not found (Debian: apt-get install redis-server redis-sentinel redis-tools)"; }
cli() { redis-cli -h 127.0.0.1 -p "$1" "${@:2}"; }
answers() { [ "$(cli "$1" ping 2>/dev/null)" = "PONG" ]; }

healthy() {
    local port replica
    for replica in "${REPLICA_PORTS[@]}"; do
        [ "$(cli "$replica" info replication 2>/dev/null | tr -d '\r' | grep '^master_link_status:')" = "master_link_status:up" ] || return 1
    done
    for port in "${SENTINELS[@]}"; do
        [ "$(cli "$port" sentinel get-master-addr-by-name "$MASTER" 2>/dev/null | tr '\n' ' ')" = "127.0.0.1 $MASTER_PORT " ] || return 1
        for replica in "${REPLICA_PORTS[@]}"; do
            cli "$port" sentinel replicas "$MASTER" 2>/dev/null | grep -q "^127.0.0.1:$replica$" || return 1
        done
        [ "$(cli "$port" sentinel master "$MASTER" 2>/dev/null | grep -A1 '^num-other-sentinels$' | tail -n 1)" = "2" ] || return 1
    done
}

stop() {
    local pidfile pid deadline
    # Every process this script started, whatever REDIS_SENTINEL_REPLICAS was then.
    for pidfile in "$DIR"/*/pid; do
        pid=""
        [ -f "$pidfile" ] && pid=$(cat "$pidfile" 2>/dev/null || true)
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            deadline=$((SECONDS + 10))
            while kill -0 "$pid" 2>/dev/null; do
                [ $SECONDS -lt $deadline ] || { kill -9 "$pid" 2>/dev/null || true; break; }
                sleep 0.1
            done
        fi
    done
    rm -rf "$DIR"
}

server() { # name port [extra args...]
    local name=$1 port=$2
    mkdir -p "$DIR/$name"
    redis-server --port "$port" --bind 127.0.0.1 --daemonize yes \
        --dir "$DIR/$name" --pidfile "$DIR/$name/pid" --logfile "$DIR/$name/log" \
        --save '' --appendonly no "${@:3}" \
        || die "redis-server $name on port $port did not start (see $DIR/$name/log)"
}

start() {
    need redis-server
    need redis-cli
    if healthy 2>/dev/null; then
        say "already running (master 127.0.0.1:$MASTER_PORT, sentinels ${SENTINELS[*]})"
        return 0
    fi
    stop
    local port
    for port in "${ALL_PORTS[@]}"; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            die "port $port is in use by a process this script did not start; set REDIS_SENTINEL_DATA_PORT / REDIS_SENTINEL_PORT"
        fi
    done
    mkdir -p "$DIR"
    server master "$MASTER_PORT"
    local i=1
    for port in "${REPLICA_PORTS[@]}"; do
        server "$([ $i = 1 ] && echo replica || echo "replica$i")" "$port" --replicaof 127.0.0.1 "$MASTER_PORT"
        i=$((i + 1))
    done
    i=0
    for port in "${SENTINELS[@]}"; do
        mkdir -p "$DIR/s$i"
        # Sentinel rewrites its config file at run time: it must be a writable file of its own.
        cat >"$DIR/s$i/sentinel.conf" <<CONF
port $port
bind 127.0.0.1
daemonize yes
pidfile $DIR/s$i/pid
logfile $DIR/s$i/log
dir $DIR/s$i
sentinel monitor $MASTER 127.0.0.1 $MASTER_PORT 2
sentinel down-after-milliseconds $MASTER $DOWN_AFTER
sentinel failover-timeout $MASTER 10000
sentinel parallel-syncs $MASTER 1
CONF
        redis-server "$DIR/s$i/sentinel.conf" --sentinel \
            || die "sentinel on port $port did not start (see $DIR/s$i/log)"
        i=$((i + 1))
    done
    local deadline=$((SECONDS + TIMEOUT)) started=$SECONDS
    until healthy 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || die "setup not healthy within ${TIMEOUT}s (logs in $DIR)"
        sleep 0.2
    done
    say "up after ~$((SECONDS - started))s: master 127.0.0.1:$MASTER_PORT, replicas ${REPLICA_PORTS[*]}, sentinels ${SENTINELS[*]} ($MASTER); data in $DIR"
}

revive() {
    local name=$1 port
    case "$name" in
        master) port=$MASTER_PORT ;;
        replica) port=${REPLICA_PORTS[0]} ;;
        replica[0-9]*) port=$((DATA_PORT + ${name#replica})) ;;
        *) die "revive: unknown node '$name'" ;;
    esac
    [ -d "$DIR/$name" ] || die "revive: no folder $DIR/$name (start first)"
    answers "$port" && die "revive: port $port still answers"
    server "$name" "$port"
    say "revived $name on 127.0.0.1:$port"
}

case "${1:-}" in
    start) start ;;
    revive) [ -n "${2:-}" ] || { echo "usage: $0 revive NAME" >&2; exit 2; }; revive "$2" ;;
    stop) stop; say "stopped" ;;
    *) echo "usage: $0 start|stop|revive NAME" >&2; exit 2 ;;
esac
