#!/usr/bin/env bash
# Installs the Node app of the express-session interop test (interop/node: express,
# express-session, connect-redis + redis, connect-pg-simple + pg) from its committed
# package-lock.json, with the machine's Node.js and npm.
#
#   scripts/node-interop.sh install   # idempotent: `npm ci` only when node_modules is missing
#                                     # or older than package-lock.json
#   scripts/node-interop.sh check     # fails unless node, npm and the packages are there
#   scripts/node-interop.sh clean     # deletes interop/node/node_modules
#
# The interop tests (package session-interop) start the app themselves with `node app.js`;
# they read NODE (default `node`) for the Node.js binary.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
APP="$ROOT/interop/node"
MIN_NODE_MAJOR=18

die() { echo "node-interop: $*" >&2; exit 1; }
say() { echo "node-interop: $*" >&2; }

need_node() {
    command -v "${NODE:-node}" >/dev/null 2>&1 \
        || die "Node.js not found (need >= $MIN_NODE_MAJOR; Debian: apt-get install nodejs npm)"
    command -v npm >/dev/null 2>&1 || die "npm not found (Debian: apt-get install npm)"
    local major
    major=$("${NODE:-node}" -p 'process.versions.node.split(".")[0]')
    [ "$major" -ge "$MIN_NODE_MAJOR" ] \
        || die "Node.js $("${NODE:-node}" --version) is too old (need >= $MIN_NODE_MAJOR)"
}

installed() {
    local marker="$APP/node_modules/.package-lock.json"
    [ -f "$marker" ] && [ ! "$APP/package-lock.json" -nt "$marker" ] || return 1
    local pkg
    for pkg in express express-session connect-redis redis connect-pg-simple pg; do
        [ -f "$APP/node_modules/$pkg/package.json" ] || return 1
    done
}

install() {
    need_node
    [ -f "$APP/package-lock.json" ] || die "$APP/package-lock.json is missing"
    if installed; then
        say "packages already installed in $APP/node_modules"
        return 0
    fi
    say "npm ci in $APP"
    (cd "$APP" && npm ci --no-audit --no-fund) || die "npm ci failed in $APP"
    installed || die "npm ci finished but the packages are incomplete in $APP/node_modules"
    # The app must load (ESM imports resolve) before a test relies on it.
    (cd "$APP" && "${NODE:-node}" --input-type=module -e '
        await import("express"); await import("express-session");
        await import("connect-redis"); await import("redis");
        await import("connect-pg-simple"); await import("pg");') \
        || die "the installed packages do not load with $("${NODE:-node}" --version)"
    say "installed"
}

case "${1:-}" in
    install) install ;;
    check)
        need_node
        installed || die "packages missing: run scripts/node-interop.sh install"
        say "ok ($("${NODE:-node}" --version))"
        ;;
    clean) rm -rf "$APP/node_modules" ;;
    *) die "usage: $0 install|check|clean" ;;
esac
