#!/usr/bin/env bash
# Installs what scripts/test.sh needs and this machine lacks, through the system package
# manager (apt, Debian and Ubuntu): a PostgreSQL server (database `test`, trust auth on
# loopback), redis-server and redis-cli, a MariaDB server (database `test`, root without a
# password on loopback), Node.js and npm, and Python 3 with venv for the MongoDB-compatible
# test server (scripts/mongo.sh installs that server itself from PyPI, and says which Python
# versions it takes: 3.10 to 3.13, the system's python3 on Debian 12 and 13 and Ubuntu 24.04).
# The package names are the same on those three; the PostgreSQL version is whichever the
# system's `postgresql` package brings (15, 17, 16).
#
#   bash scripts/provision.sh            # install what is missing (as root), else fail naming it
#   bash scripts/provision.sh --dry-run  # print what is missing and the command that installs it
#
# What is already installed or already answers on its loopback port is used as it is: a
# server this script did not install is never reconfigured. Without root, it names each
# missing piece, prints the one command to run (`sudo bash scripts/provision.sh`: only the
# installing needs root, the tests run as the user), and exits 1. scripts/test.sh runs it first.
#
# Environment: PROVISION_PRETEND_MISSING (space-separated piece ids treated as missing: the
# test of this script, scripts/provision-test.sh, uses it with --dry-run and without root).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[provision] %s\n' "$*" >&2; }
die() { printf '[provision] ERROR: %s\n' "$*" >&2; exit 1; }

dry_run=false
case "${1:-}" in
    "") ;;
    --dry-run) dry_run=true ;;
    *) die "usage: $0 [--dry-run]" ;;
esac

tcp_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
have() { command -v "$1" >/dev/null 2>&1; }
uid=$(id -u)
# Pretending is for tests: only where nothing gets installed (a dry run, or without root).
pretend_missing() {
    { $dry_run || [ "$uid" -ne 0 ]; } && [[ " ${PROVISION_PRETEND_MISSING:-} " == *" $1 "* ]]
}

# Each piece: an id, what it is, its apt packages, and a test that it is there.
PIECES=(postgres psql redis redis-cli mariadb mariadb-client node npm python cc)
describe() {
    case "$1" in
        postgres) echo "PostgreSQL server" ;;
        psql) echo "PostgreSQL client (psql, pg_isready)" ;;
        redis) echo "Redis server (redis-server)" ;;
        redis-cli) echo "Redis client (redis-cli)" ;;
        mariadb) echo "MariaDB server" ;;
        mariadb-client) echo "MariaDB client (mariadb)" ;;
        node) echo "Node.js >= 18" ;;
        npm) echo "npm" ;;
        python) echo "Python 3 with venv (for the MongoDB-compatible server)" ;;
        cc) echo "C compiler and linker (cc, for Rust's build scripts)" ;;
    esac
}
packages() {
    case "$1" in
        postgres) echo postgresql ;;
        psql) echo postgresql-client ;;
        redis) echo redis-server ;;
        redis-cli) echo redis-tools ;;
        mariadb) echo mariadb-server ;;
        mariadb-client) echo mariadb-client ;;
        node) echo nodejs ;;
        npm) echo npm ;;
        python) echo python3 python3-venv ;;
        cc) echo gcc libc6-dev ;;
    esac
}
present() {
    pretend_missing "$1" && return 1
    case "$1" in
        # A server is there when it answers on its port, or when its package is installed
        # (scripts/services.sh starts it).
        postgres) tcp_open 127.0.0.1 5432 || { have pg_ctlcluster && compgen -G '/etc/postgresql/*/main' >/dev/null; } ;;
        psql) have psql && have pg_isready ;;
        redis) have redis-server ;;
        redis-cli) have redis-cli ;;
        mariadb) tcp_open 127.0.0.1 3306 || [ -x /usr/sbin/mariadbd ] ;;
        mariadb-client) have mariadb ;;
        node) have "${NODE:-node}" && [ "$("${NODE:-node}" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)" -ge 18 ] ;;
        npm) have npm ;;
        python)
            # The virtualenv scripts/mongo.sh keeps is enough on its own; else an interpreter
            # it can make one with.
            mongo_venv_ready || bash scripts/mongo.sh python >/dev/null 2>&1 ;;
        cc) have cc ;;
    esac
}
mongo_venv_ready() {
    local venv
    venv=$(bash scripts/mongo.sh venv-path)
    [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import secantus.server, pymongo' 2>/dev/null
}

missing=()
for piece in "${PIECES[@]}"; do
    present "$piece" || missing+=("$piece")
done
if [ "${#missing[@]}" -eq 0 ]; then
    log "everything the tests need is installed"
    exit 0
fi

pkgs=()
for piece in "${missing[@]}"; do
    read -r -a more <<<"$(packages "$piece")"
    pkgs+=("${more[@]}")
done
apt_line="apt-get install -y --no-install-recommends ${pkgs[*]}"
names() { local piece; for piece in "${missing[@]}"; do printf '  - %s (%s)\n' "$(describe "$piece")" "$(packages "$piece")"; done; }

if $dry_run; then
    log "missing:"; names >&2
    if [ "$uid" -eq 0 ]; then log "would run: apt-get update && $apt_line"
    else log "would ask for: sudo bash scripts/provision.sh"; fi
    exit 0
fi
if [ "$uid" -ne 0 ]; then
    {
        echo "[provision] the tests need, and this machine lacks:"
        names
        echo "[provision] install them (as root, with apt; the servers start as system services), then"
        echo "[provision] run bash scripts/test.sh again as yourself:"
        echo
        echo "    sudo bash scripts/provision.sh"
        echo
    } >&2
    exit 1
fi
have apt-get || { log "missing:"; names >&2; die "no apt-get here: install the pieces above with this system's package manager"; }

log "installing: ${pkgs[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q || die "apt-get update failed"
if ! apt-get install -y -q --no-install-recommends "${pkgs[@]}"; then
    # Ubuntu keeps nodejs, npm and redis-server in its universe component.
    if grep -qx 'ID=ubuntu' /etc/os-release 2>/dev/null; then
        log "on Ubuntu, nodejs, npm and redis-server come from universe: add-apt-repository universe"
    fi
    die "apt-get install ${pkgs[*]} failed"
fi
for piece in "${missing[@]}"; do
    present "$piece" || die "$(describe "$piece") still missing after installing $(packages "$piece")"
done

# First-time set-up of the servers installed just now (never of one that was already there).
installed() { [[ " ${missing[*]} " == *" $1 "* ]]; }
if installed postgres; then
    version=$(find /etc/postgresql -mindepth 2 -maxdepth 2 -name main -printf '%h\n' | sort -V | tail -n1)
    version=${version##*/}
    hba="/etc/postgresql/$version/main/pg_hba.conf"
    if ! grep -q 'session-store tests' "$hba"; then
        log "PostgreSQL $version: trust auth on loopback ($hba)"
        { printf '# session-store tests: trust on loopback\n'
          printf 'host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n'
          cat "$hba"; } >"$hba.new"
        chown --reference="$hba" "$hba.new"; chmod --reference="$hba" "$hba.new"; mv "$hba.new" "$hba"
    fi
    bash scripts/services.sh --up postgres
    pg_ctlcluster --skip-systemctl-redirect "$version" main reload
    # From /: the user postgres may not enter the current folder.
    if ! (cd / && runuser -u postgres -- psql -tAc "select 1 from pg_database where datname = 'test'") | grep -q 1; then
        (cd / && runuser -u postgres -- createdb test)
    fi
    log "PostgreSQL $version: database test ready"
fi
if installed mariadb; then
    bash scripts/services.sh --up mariadb
    # As on the CI machines: root without a password on loopback. Plain mysql_native_password:
    # sqlx does not follow the plugin chain `unix_socket OR mysql_native_password` (Debian's
    # default for root@localhost), which a TCP connection from 127.0.0.1 meets when the server
    # resolves it to `localhost`.
    mariadb -u root <<'SQL'
CREATE DATABASE IF NOT EXISTS test;
ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('');
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
FLUSH PRIVILEGES;
SQL
    log "MariaDB: database test ready"
fi
log "installed: ${pkgs[*]}"
