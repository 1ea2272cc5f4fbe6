#!/usr/bin/env bash
# Tests scripts/provision.sh without installing anything: its dry run with pieces pretended
# missing, and (as root, dropping to the user nobody) the message and exit status without root.
#   bash scripts/provision-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

failures=0 passed=0
check() { # name, expected exit status, text the output must contain, command...
    local name=$1 want=$2 text=$3 out status=0
    shift 3
    out=$("$@" 2>&1) || status=$?
    if [ "$status" -ne "$want" ] || [[ "$out" != *"$text"* ]]; then
        printf 'FAIL %s: exit %s (want %s), output:\n%s\n' "$name" "$status" "$want" "$out"
        failures=$((failures + 1))
    else
        printf 'ok   %s\n' "$name"
        passed=$((passed + 1))
    fi
}

check "dry run names a missing server" 0 "PostgreSQL server (postgresql)" \
    env PROVISION_PRETEND_MISSING="postgres" bash scripts/provision.sh --dry-run
check "dry run lists every missing piece's packages" 0 "nodejs npm python3 python3-venv" \
    env PROVISION_PRETEND_MISSING="node npm python" bash scripts/provision.sh --dry-run
check "unknown option" 1 "usage" bash scripts/provision.sh --frobnicate
if [ "$(id -u)" -eq 0 ] && command -v setpriv >/dev/null; then
    as_nobody=(setpriv --reuid=65534 --regid=65534 --clear-groups env HOME=/tmp)
    check "without root: the one command" 1 "sudo bash scripts/provision.sh" \
        "${as_nobody[@]}" PROVISION_PRETEND_MISSING="mariadb redis" bash scripts/provision.sh
    check "without root: each missing piece named" 1 "MariaDB server (mariadb-server)" \
        "${as_nobody[@]}" PROVISION_PRETEND_MISSING="mariadb redis" bash scripts/provision.sh
    check "without root, dry run: what it would ask for" 0 "would ask for: sudo bash scripts/provision.sh" \
        "${as_nobody[@]}" PROVISION_PRETEND_MISSING="cc" bash scripts/provision.sh --dry-run
fi
echo "provision-test: $passed passed, $failures failed"
[ "$failures" -eq 0 ]
