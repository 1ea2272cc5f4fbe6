#!/usr/bin/env bash
# Installs the Node app of the express-session interop test (interop/node: express,
# express-session, connect-redis + redis, connect-pg-simple + pg) from its committed
# package-lock.json, with the machine's Node.js and npm.
#
#   scripts/node-interop.sh install   # idempotent: `npm ci` only when no install of this
#                                     # package-lock.json (and Node.js major) is cached
#   scripts/node-interop.sh check     # fails unless node, npm and the packages are there
#   scripts/node-interop.sh clean     # removes interop/node/node_modules (the cache stays)
#
# The packages are installed once per machine into
# ${XDG_CACHE_HOME:-$HOME/.cache}/session-store/node-interop/KEY/node_modules, KEY a hash of
# package-lock.json and the Node.js major version, and interop/node/node_modules links there:
# a fresh clone (CI) reuses them; a changed lock file installs anew. The last 3 are kept.
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

CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/session-store/node-interop"

cache_key() {
    { cat "$APP/package-lock.json"; "${NODE:-node}" -p 'process.versions.node.split(".")[0]'; } \
        | sha256sum | cut -c1-16
}

# complete DIR: DIR/node_modules holds an install of this lock file's packages.
complete() {
    local dir=$1 pkg
    [ "$(cat "$dir/node_modules/.session-store-key" 2>/dev/null)" = "$(cache_key)" ] || return 1
    for pkg in express express-session connect-redis redis connect-pg-simple pg; do
        [ -f "$dir/node_modules/$pkg/package.json" ] || return 1
    done
}

installed() { complete "$APP"; }

install() {
    need_node
    [ -f "$APP/package-lock.json" ] || die "$APP/package-lock.json is missing"
    if installed; then
        say "packages already installed in $APP/node_modules"
        return 0
    fi
    local key dir
    key=$(cache_key)
    dir="$CACHE/$key"
    if ! complete "$dir"; then
        local tmp="$CACHE/$key.tmp.$$"
        rm -rf "$tmp"
        mkdir -p "$tmp"
        cp "$APP/package.json" "$APP/package-lock.json" "$tmp/"
        say "npm ci into $dir"
        (cd "$tmp" && npm ci --no-audit --no-fund --prefer-offline) || { rm -rf "$tmp"; die "npm ci failed in $tmp"; }
        echo "$key" >"$tmp/node_modules/.session-store-key"
        rm -rf "$dir"
        mv "$tmp" "$dir"
        complete "$dir" || die "npm ci finished but the packages are incomplete in $dir/node_modules"
        # Older installs (other lock files) beyond the last 3 go.
        find "$CACHE" -mindepth 1 -maxdepth 1 -type d -printf '%T@ %p\n' | sort -rn | tail -n +4 \
            | cut -d' ' -f2- | while read -r old; do rm -rf "$old"; done
    fi
    rm -rf "$APP/node_modules"
    ln -s "$dir/node_modules" "$APP/node_modules"
    installed || die "the packages are incomplete in $APP/node_modules"
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
