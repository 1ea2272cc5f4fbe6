#!/usr/bin/env bash
# Starts or stops a 6-node Redis Cluster (3 masters, 3 replicas) on loopback for the tests
# of `stores/redis` (REDIS_CLUSTER_URLS).
#
#   scripts/redis-cluster.sh start   # idempotent: leaves a healthy running cluster alone
#   scripts/redis-cluster.sh stop    # stops the nodes and deletes their folders
#   scripts/redis-cluster.sh revive PORT  # starts the node of PORT again after it died, over
#                                         # its folder: it rejoins with its nodes.conf
#
# Environment:
#   REDIS_CLUSTER_BASE_PORT  first port (default 7000; nodes use BASE..BASE+5)
#   REDIS_CLUSTER_DIR        node folders (default ${TMPDIR:-/tmp}/session-store-redis-cluster)
#   REDIS_CLUSTER_TIMEOUT    seconds to wait for the cluster (default 60)
#   REDIS_CLUSTER_NODE_TIMEOUT  cluster-node-timeout in ms (default 5000)
set -euo pipefail

BASE_PORT=${REDIS_CLUSTER_BASE_PORT:-7000}
DIR=${REDIS_CLUSTER_DIR:-${TMPDIR:-/tmp}/session-store-redis-cluster}
TIMEOUT=${REDIS_CLUSTER_TIMEOUT:-60}
NODE_TIMEOUT=${REDIS_CLUSTER_NODE_TIMEOUT:-5000}
PORTS=()
for i in 0 1 2 3 4 5; do PORTS+=($((BASE_PORT + i))); done

die() { echo "redis-cluster: $*" >&2; exit 1; }
say() { echo "redis-cluster: $*" >&2; }

need() { command -v "$1" >/dev/null 2>&1 || die "'$1' not found (Debian: apt-get install redis-server redis-tools)"; }

cli() { redis-cli -h 127.0.0.1 -p "$1" "${@:2}"; }

answers() { [ "$(cli "$1" ping 2>/dev/null)" = "PONG" ]; }

cluster_ok() {
    local port=$1 info
    info=$(cli "$port" cluster info 2>/dev/null) || return 1
    grep -q '^cluster_state:ok' <<<"$info" && grep -q '^cluster_known_nodes:6' <<<"$info"
}

all_ok() {
    local port
    for port in "${PORTS[@]}"; do cluster_ok "$port" || return 1; done
}

# Every replica has synced with its master (a write then reaches it, and WAIT counts it;
# a replica that never synced also refuses to take over in a failover).
replicas_synced() {
    local port info
    for port in "${PORTS[@]}"; do
        info=$(cli "$port" info replication 2>/dev/null) || return 1
        if grep -q '^role:slave' <<<"$info"; then
            grep -q '^master_link_status:up' <<<"$info" || return 1
        fi
    done
}

stop() {
    local port pid deadline
    for port in "${PORTS[@]}"; do
        pid=""
        [ -f "$DIR/$port/redis.pid" ] && pid=$(cat "$DIR/$port/redis.pid" 2>/dev/null || true)
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

node() { # port: starts (or restarts) one node over its folder
    local port=$1
    mkdir -p "$DIR/$port"
    redis-server --port "$port" --bind 127.0.0.1 --daemonize yes \
        --dir "$DIR/$port" --pidfile "$DIR/$port/redis.pid" --logfile "$DIR/$port/redis.log" \
        --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout "$NODE_TIMEOUT" \
        --save '' --appendonly no \
        || die "redis-server on port $port did not start (see $DIR/$port/redis.log)"
}

start() {
    need redis-server
    need redis-cli
    if all_ok; then
        local deadline=$((SECONDS + TIMEOUT))
        until replicas_synced; do
            [ $SECONDS -lt $deadline ] || die "replicas not in sync within ${TIMEOUT}s"
            sleep 0.2
        done
        say "already running on ports ${PORTS[0]}-${PORTS[5]}"
        return 0
    fi
    # Anything half-started by us is torn down; a foreign process on our ports is an error.
    stop
    local port
    for port in "${PORTS[@]}"; do
        if answers "$port" || (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            die "port $port is in use by a process this script did not start; set REDIS_CLUSTER_BASE_PORT"
        fi
    done
    mkdir -p "$DIR"
    for port in "${PORTS[@]}"; do node "$port"; done
    local deadline=$((SECONDS + TIMEOUT))
    for port in "${PORTS[@]}"; do
        until answers "$port"; do
            [ $SECONDS -lt $deadline ] || die "node $port does not answer (see $DIR/$port/redis.log)"
            sleep 0.1
        done
    done
    local nodes=()
    for port in "${PORTS[@]}"; do nodes+=("127.0.0.1:$port"); done
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$DIR/create.log" 2>&1 \
        || die "redis-cli --cluster create failed: $(tail -n 5 "$DIR/create.log")"
    local started=$SECONDS
    until all_ok; do
        [ $SECONDS -lt $deadline ] || die "cluster_state:ok not reached within ${TIMEOUT}s"
        sleep 0.2
    done
    until replicas_synced; do
        [ $SECONDS -lt $deadline ] || die "replicas not in sync within ${TIMEOUT}s (see $DIR/*/redis.log)"
        sleep 0.2
    done
    say "cluster up on 127.0.0.1:${PORTS[0]}-${PORTS[5]} (ok after ~$((SECONDS - started))s); data in $DIR"
}

case "${1:-}" in
    start) start ;;
    revive)
        [ -n "${2:-}" ] && [ -d "$DIR/$2" ] || { echo "usage: $0 revive PORT (a node of this cluster)" >&2; exit 2; }
        answers "$2" && die "revive: port $2 still answers"
        node "$2"; say "revived node $2" ;;
    stop) stop; say "stopped" ;;
    *) echo "usage: $0 start|stop|revive PORT" >&2; exit 2 ;;
esac
