#!/usr/bin/env bash
# Makes sure the services the tests need are up on loopback, starting them where they are not.
# Usage: scripts/services.sh            (all)
#        scripts/services.sh postgres redis mariadb ...
#        scripts/services.sh --up postgres   (only until the server accepts connections, before
#                                             the `test` database exists: scripts/provision.sh)
# Fails loudly, naming the service, when one cannot be brought up. Starts the servers directly,
# not through systemd, so it works in a container or chroot too.
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
    # The newest version with a cluster `main` (one on a fresh install: Debian 12 has 15,
    # Ubuntu 24.04 16, Debian 13 17; scripts/provision.sh sets up the same one).
    local version
    version=$(find /etc/postgresql -mindepth 2 -maxdepth 2 -name main -printf '%h\n' 2>/dev/null | sort -V | tail -n1)
    [ -n "$version" ] || die "PostgreSQL has no cluster main under /etc/postgresql"
    pg_ctlcluster --skip-systemctl-redirect "${version##*/}" main start || true
  fi
  wait_for PostgreSQL 60 pg_isready -q -h 127.0.0.1 -p 5432
  $up_only || wait_for PostgreSQL 60 psql -h 127.0.0.1 -U postgres -d test -c 'select 1'
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
    # Its run-time folder is made by the init system, which a container or chroot lacks.
    [ -d /run/mysqld ] || install -d -o mysql -g mysql /run/mysqld
    # --pidfile: a mariadbd that is not this system's (another container's or chroot's, seen by
    # its path) does not count as running.
    start-stop-daemon --start --oknodo --background --pidfile /run/mysqld/mysqld.pid \
      --exec /usr/sbin/mariadbd -- --user=mysql --pid-file=/run/mysqld/mysqld.pid
  fi
  # `ping` succeeds as soon as the server answers, whether or not it lets us in. No check of
  # the server's certificate: MariaDB 11.4 and later (Debian 13) make a self-signed one, which
  # their clients verify by default and cannot for a user without a password.
  wait_for MariaDB 60 mariadb-admin --skip-ssl-verify-server-cert --protocol=tcp -h 127.0.0.1 -P 3306 ping
  $up_only || wait_for MariaDB 60 mariadb --skip-ssl-verify-server-cert -h 127.0.0.1 -u root -e 'select 1' test
  log "MariaDB up"
}

up_only=false
if [ "${1:-}" = --up ]; then up_only=true; shift; fi
if [ $# -eq 0 ]; then set -- postgres redis mariadb; fi
for service in "$@"; do
  case "$service" in
    postgres|redis|mariadb) "start_$service" ;;
    *) die "unknown service '$service'" ;;
  esac
done
