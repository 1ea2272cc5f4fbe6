#!/usr/bin/env bash
# Makes sure the services the tests need are up on loopback, starting them where they are not.
# Usage: scripts/services.sh            (all)
#        scripts/services.sh postgres redis mariadb ...
# Fails loudly, naming the service, when one cannot be brought up.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

# wait_for NAME SECONDS COMMAND...: polls COMMAND until it succeeds or the deadline passes.
wait_for() {
  local name=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then die "$name did not come up within ${secs}s"; fi
    sleep 0.5
  done
}

tcp_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

start_postgres() {
  if ! tcp_open 127.0.0.1 5432; then
    log "starting PostgreSQL"
    command -v pg_ctlcluster >/dev/null || die "PostgreSQL is not installed (pg_ctlcluster missing)"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
  wait_for PostgreSQL 60 psql -h 127.0.0.1 -U postgres -d test -c 'select 1'
  log "PostgreSQL up"
}

start_redis() {
  if ! tcp_open 127.0.0.1 6379; then
    log "starting Redis"
    command -v redis-server >/dev/null || die "redis-server is not installed"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log
  fi
  wait_for Redis 30 redis-cli -h 127.0.0.1 -p 6379 ping
  log "Redis up"
}

start_mariadb() {
  if ! tcp_open 127.0.0.1 3306; then
    log "starting MariaDB"
    [ -x /usr/sbin/mariadbd ] || die "MariaDB is not installed (/usr/sbin/mariadbd missing)"
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  fi
  wait_for MariaDB 60 mariadb -h 127.0.0.1 -u root -e 'select 1' test
  log "MariaDB up"
}

if [ $# -eq 0 ]; then set -- postgres redis mariadb; fi
for service in "$@"; do
  case "$service" in
    postgres|redis|mariadb) "start_$service" ;;
    *) die "unknown service '$service'" ;;
  esac
done
