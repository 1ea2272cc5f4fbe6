#!/usr/bin/env bash
# Benchmarks session-store against tower-sessions, actix-session and the raw drivers in one
# run, then writes BENCHMARKS.md (tables of ratios) and benches/chart.svg.
#   bash scripts/bench.sh                 # everything (~15 min of measuring after the build)
#   bash scripts/bench.sh manager http    # only some sections (store manager cost http trips memory
#                                         # memory-plain memory-encoded instructions)
# Services: PostgreSQL and MariaDB as for scripts/test.sh, a private SecantusDB
# (MongoDB-compatible) on BENCH_MONGO_PORT (default 27918), stopped at exit, and a private
# redis-server on BENCH_REDIS_PORT (default 6399) whose counters
# (`INFO commandstats`) nothing else touches, and a database `session_bench` of its own for
# the `pg_stat_database` counters. Installs `wrk` with apt if it is missing.
# Environment: BENCH_SECS (per throughput slice, default 1), BENCH_ROUNDS (slices per library
# and workload, default 7), WRK_SECS (per wrk run, default 2), HTTP_ROUNDS (wrk runs per
# variant and workload, default 9), BENCH_SESSIONS (memory section, default 1000000),
# CARGO_TARGET_DIR; to profile one case, BENCH_WORKLOADS and BENCH_HTTP (comma lists of
# workloads and HTTP variants, e.g. BENCH_HTTP=none,ours/memory).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

RESULTS=${BENCH_RESULTS:-$ROOT/target/bench-peers.jsonl}
if [ -z "${BENCH_RENDER_ONLY:-}" ]; then
bash scripts/services.sh
# A private MongoDB-compatible server, like the private Redis below: the bench leaves many
# sessions behind, and the tests' server sweeps its TTL index every second (a third of a core
# here once the bench has filled it), which would slow every later section. This one sweeps
# once a minute and stops when the script exits.
BENCH_MONGO=(env MONGO_PORT="${BENCH_MONGO_PORT:-27918}" MONGO_TTL_SWEEP_SECONDS=60
    MONGO_STATE_DIR="$ROOT/target/bench-mongo")
BENCH_REDIS_PORT=${BENCH_REDIS_PORT:-6399}
STARTED_REDIS=""
stop_servers() {
    if [ -n "$STARTED_REDIS" ]; then
        redis-cli -p "$BENCH_REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    fi
    "${BENCH_MONGO[@]}" bash scripts/mongo.sh stop >/dev/null 2>&1 || true
}
trap stop_servers EXIT
"${BENCH_MONGO[@]}" bash scripts/mongo.sh stop >/dev/null 2>&1 || true
"${BENCH_MONGO[@]}" bash scripts/mongo.sh start

if ! command -v wrk >/dev/null 2>&1; then
    echo "bench: installing wrk" >&2
    apt-get update -qq && apt-get install -y -qq wrk
fi
command -v wrk >/dev/null 2>&1 || { echo "bench: wrk is required (apt-get install wrk)" >&2; exit 1; }
if ! command -v valgrind >/dev/null 2>&1; then
    echo "bench: installing valgrind" >&2
    apt-get update -qq && apt-get install -y -qq valgrind
fi
command -v valgrind >/dev/null 2>&1 || { echo "bench: valgrind is required (apt-get install valgrind)" >&2; exit 1; }

if ! redis-cli -p "$BENCH_REDIS_PORT" ping >/dev/null 2>&1; then
    redis-server --port "$BENCH_REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --daemonize yes --pidfile "/tmp/session-bench-redis-$BENCH_REDIS_PORT.pid" \
        --logfile "/tmp/session-bench-redis-$BENCH_REDIS_PORT.log"
    STARTED_REDIS=1
    for _ in $(seq 50); do
        redis-cli -p "$BENCH_REDIS_PORT" ping >/dev/null 2>&1 && break
        sleep 0.1
    done
    redis-cli -p "$BENCH_REDIS_PORT" ping >/dev/null || { echo "bench: private redis did not start" >&2; exit 1; }
fi
# The private server holds only what earlier runs left (sessions live an hour): start empty.
redis-cli -p "$BENCH_REDIS_PORT" flushall >/dev/null

PSQL=(psql -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1 -qAt)
if ! "${PSQL[@]}" -d postgres -c "SELECT 1 FROM pg_database WHERE datname = 'session_bench'" | grep -q 1; then
    "${PSQL[@]}" -d postgres -c "CREATE DATABASE session_bench"
fi

export REDIS_URL="redis://127.0.0.1:$BENCH_REDIS_PORT"
export POSTGRES_URL=${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/session_bench}
MONGODB_URL=$("${BENCH_MONGO[@]}" bash scripts/mongo.sh url)
export MONGODB_URL
export MYSQL_URL=${BENCH_MYSQL_URL:-mysql://root@127.0.0.1:3306/test}

MANIFEST=benches/peers/Cargo.toml
cargo bench --manifest-path "$MANIFEST" --bench peers --no-run
mkdir -p "$(dirname "$RESULTS")"
: > "$RESULTS"
# Instructions per manager request (valgrind's cachegrind counts them exactly, so this is
# the one measurement that machine load does not move): the `ops` example runs N requests,
# less a run that only sets up.
instructions() {
    local ops n=20000
    ops=$(cargo build --release --manifest-path "$MANIFEST" --example ops --message-format=json \
        | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["executable"])' | tail -1)
    [ -x "$ops" ] || { echo "bench: the ops example did not build" >&2; exit 1; }
    count() {
        valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null "$@" 2>&1 \
            | awk '/I *refs/ { gsub(",", "", $NF); print $NF }'
    }
    # ours and tower-sessions at the manager level; then the HTTP section's axum app called in
    # process (no network): without sessions, behind a no-op layer, and with our layer.
    # The plain stores (issue #25): our manager on `Record` clones and on payload envelopes.
    for lib in ours tower-sessions plain plain-encoded axum-none axum-noop axum-ours; do
        local base
        base=$(count "$ops" "$lib" none 1)
        for w in read write new touch; do
            local total
            total=$(count "$ops" "$lib" "$w" "$n")
            echo "{\"section\": \"instructions\", \"lib\": \"$lib\", \"workload\": \"$w\", \"requests\": $n, \"per_request\": $(( (total - base) / n ))}" >> "$RESULTS"
        done
    done
    # client_counts BACKEND VAR URL EXTRA LIB...: the client's side of a request of each LIB
    # (read, write), with the environment variable VAR set to URL (the server runs outside
    # valgrind); EXTRA goes into each JSON row.
    local r=5000
    client_counts() {
        local backend=$1 var=$2 url=$3 extra=$4 lib w base total
        shift 4
        for lib in "$@"; do
            base=$(export "$var=$url"; count "$ops" "$lib" none 1)
            for w in read write; do
                total=$(export "$var=$url"; count "$ops" "$lib" "$w" "$r")
                echo "{\"section\": \"client-instructions\", \"backend\": \"$backend\",$extra \"lib\": \"$lib\", \"workload\": \"$w\", \"requests\": $r, \"per_request\": $(( (total - base) / r ))}" >> "$RESULTS"
            done
        done
    }
    # Redis: ours at the manager level against the raw `redis` client sending the floor's
    # commands.
    client_counts redis REDIS_URL "redis://127.0.0.1:$BENCH_REDIS_PORT" "" ours-redis floor-redis
    # Postgres: ours, tower-sessions-sqlx-store and raw sqlx, with and without TLS (sqlx's
    # default `sslmode=prefer` negotiates TLS with a server that offers it).
    for tls in prefer disable; do
        client_counts postgres POSTGRES_URL "$POSTGRES_URL?sslmode=$tls" " \"tls\": \"$tls\"," \
            ours-pg tower-pg floor-pg
    done
}

if [ $# -eq 0 ]; then
    # The memory sections run each in its own process so their RSS is not mixed with others.
    for section in memory memory-plain memory-encoded; do
        cargo bench --manifest-path "$MANIFEST" --bench peers -- "$RESULTS" "$section"
    done
    cargo bench --manifest-path "$MANIFEST" --bench peers -- "$RESULTS" cost store manager trips http
    instructions
else
    rest=()
    for section in "$@"; do
        case $section in
            instructions) instructions ;;
            # Memory sections in processes of their own, as above.
            memory | memory-plain | memory-encoded)
                cargo bench --manifest-path "$MANIFEST" --bench peers -- "$RESULTS" "$section" ;;
            *) rest+=("$section") ;;
        esac
    done
    if [ ${#rest[@]} -gt 0 ]; then
        cargo bench --manifest-path "$MANIFEST" --bench peers -- "$RESULTS" "${rest[@]}"
    fi
fi

fi # BENCH_RENDER_ONLY: only turn the results file into BENCHMARKS.md and the chart.

COMMAND="bash scripts/bench.sh $*"
MACHINE="$(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(uname -sr)"
python3 - "$RESULTS" "$COMMAND" "$MACHINE" <<'PY'
import json, sys, datetime, html

path, command, machine = sys.argv[1], sys.argv[2].strip(), sys.argv[3]
rows = [json.loads(l) for l in open(path) if l.strip()]
WL = ["read", "write", "new", "touch"]

def pick(section, **kw):
    return [r for r in rows if r.get("section") == section and all(r.get(k) == v for k, v in kw.items())]

def one(section, **kw):
    r = pick(section, **kw)
    return r[-1] if r else None

def ratio(a, b):
    return f"{a / b:.2f}x" if a and b else "n/a"

def paired(a, b):
    """a ÷ b for two throughput rows (ops/s or HTTP requests/s): the median of the per-round ratios when both carry their
    slices (each round runs every library once, back to back, so drift in machine load hits
    both sides of a ratio alike), else the ratio of the medians."""
    sa, sb = a.get("samples") or [], b.get("samples") or []
    if sa and len(sa) == len(sb) and all(sb):
        rs = sorted(x / y for x, y in zip(sa, sb))
        n = len(rs)
        return rs[n // 2] if n % 2 else (rs[n // 2 - 1] + rs[n // 2]) / 2
    rate = lambda r: r.get("ops_per_sec", r.get("requests_per_sec")) or 0.0
    return rate(a) / rate(b) if rate(b) else 0.0

def mark(value, ok):
    return f"{value} {'✅' if ok else '❌'}"

out = []
out.append("# Benchmarks\n")
out.append("session-store against tower-sessions 0.14 (its MemoryStore, tower-sessions-redis-store 0.16, "
           "tower-sessions-sqlx-store 0.15), actix-session 0.11's Redis store, and the raw drivers, "
           "measured back to back in one process. Absolute numbers on a shared machine are noisy; "
           "read the **ratios**.\n")
out.append(f"- Command: `{command}` (results in `target/bench-peers.jsonl`)")
out.append(f"- Machine: {machine}")
out.append(f"- Date: {datetime.datetime.utcnow().strftime('%Y-%m-%d %H:%M UTC')}")
out.append("- Session: 10 small keys (nine strings and a counter) and one 1 KB string. Workloads: "
           "**read** (existing session, read a key), **write** (increment the counter), **new** (no "
           "cookie, set a key), **touch** (existing, unmodified, expiry extension due on every "
           "request: ours `touch_after(0)`, tower-sessions `OnInactivity` + `always_save`, "
           "actix-session `update_ttl`).")
out.append("- Levels: **store** (the store operation alone), **manager** (load + handler work + "
           "commit, no HTTP, what each library's middleware does), **HTTP** (axum on loopback "
           "under `wrk -t2 -c64`, with and without a session layer). The raw floor is the "
           "driver alone: read = GET / SELECT, write = GET+SET / SELECT+upsert, new = SET NX / "
           "insert, touch = GET+PEXPIRE / SELECT+UPDATE, same payload and concurrency.\n")
out.append("![ours ÷ tower-sessions](benches/chart.svg)\n")
out.append("Caveats: the machine has 2 cores shared by the load generator, the servers (Redis, Postgres, "
           "SecantusDB) and, while this ran, other jobs, so one run's ratios move by ±15 %. The raw floor "
           "sends the commands but neither encodes nor decodes a session, and on 2 cores the client's CPU "
           "competes with the server's, so ours ÷ floor measures our client-side cost too. actix-session is "
           "an actix-web middleware: it is measured at the store and manager levels, not under axum. "
           "MongoDB has no peer store here (tower-sessions' Mongo store is on bson 2). SQLite (a WAL file "
           "on local disk) and MySQL (MariaDB) are compared with tower-sessions-sqlx-store; the raw "
           "floor is measured on Redis and the SQL backends, round trips on every network backend.\n")

# cost per request
out.append("## Manager cost per request, MemoryStore, one task\n")
out.append("Load, handler work and commit (with the `Set-Cookie` each library's middleware writes), "
           "run inline on one task; the libraries take turns in seven rounds of 1-second slices per "
           "workload, each round starting with the next library; µs are from each one's median slice, "
           "the ratio is the median of the per-round ratios. The instruction counts (valgrind's cachegrind, "
           "per request, set-up subtracted) do not move with machine load.\n")
out.append("| workload | ours µs | tower-sessions µs | ours ÷ tower (target ≤ 0.5) | ours instructions | tower-sessions instructions | ÷ |")
out.append("|---|---|---|---|---|---|---|")
for w in WL:
    a = one("cost", backend="memory", lib="ours", workload=w)
    b = one("cost", backend="memory", lib="tower-sessions", workload=w)
    ia = one("instructions", lib="ours", workload=w)
    ib = one("instructions", lib="tower-sessions", workload=w)
    instr = (f"{ia['per_request']} | {ib['per_request']} | {ia['per_request'] / ib['per_request']:.2f}"
             if ia and ib and ib["per_request"] else "n/a | n/a | n/a")
    if a and b and a["ops_per_sec"] and b["ops_per_sec"]:
        ua, ub = 1e6 / a["ops_per_sec"], 1e6 / b["ops_per_sec"]
        r = 1 / paired(a, b)
        out.append(f"| {w} | {ua:.2f} | {ub:.2f} | {mark(f'{r:.2f}', r <= 0.5)} | {instr} |")
    else:
        out.append(f"| {w} | n/a | n/a | not measured | {instr} |")
out.append("")

ci = pick("client-instructions")
if ci:
    out.append("### Client instructions per request, Redis\n")
    out.append("The client's side only (valgrind counts the process it runs; the Redis server is outside "
               "it): ours at the manager level (load, handler work, commit, `Set-Cookie`) against the raw "
               "`redis` client sending the floor's commands (read: `GET`; write: `GET` + `SET`) with the "
               "same payload. On 2 cores, where the server takes one, this client cost is what separates "
               "ours from the floor at the manager level.\n")
    out.append("| workload | ours | raw driver | ours − driver | driver ÷ ours |")
    out.append("|---|---|---|---|---|")
    for w in ("read", "write"):
        a = one("client-instructions", lib="ours-redis", workload=w)
        b = one("client-instructions", lib="floor-redis", workload=w)
        if a and b and a["per_request"]:
            out.append(f"| {w} | {a['per_request']} | {b['per_request']} | {a['per_request'] - b['per_request']} | {b['per_request'] / a['per_request']:.2f} |")
    out.append("")
    if one("client-instructions", backend="postgres", lib="ours-pg", workload="read"):
        out.append("### Client instructions per request, Postgres\n")
        out.append("As above, at the manager level: ours (`PostgresStore`), tower-sessions with "
                   "tower-sessions-sqlx-store, and raw sqlx sending the floor's statements (read: `SELECT`; "
                   "write: `SELECT` + upsert), all on sqlx 0.8.6, over TLS (`sslmode=prefer`, which "
                   "the server here accepts) and without (`sslmode=disable`). The raw driver "
                   "neither encodes nor decodes a session.\n")
        out.append("| TLS | workload | ours | tower-sessions | raw driver | ours ÷ tower-sessions | driver ÷ ours |")
        out.append("|---|---|---|---|---|---|---|")
        for tls in ("prefer", "disable"):
            for w in ("read", "write"):
                a = one("client-instructions", backend="postgres", tls=tls, lib="ours-pg", workload=w)
                t = one("client-instructions", backend="postgres", tls=tls, lib="tower-pg", workload=w)
                b = one("client-instructions", backend="postgres", tls=tls, lib="floor-pg", workload=w)
                if a and t and b and a["per_request"]:
                    out.append(f"| {tls} | {w} | {a['per_request']} | {t['per_request']} | {b['per_request']} | "
                               f"{a['per_request'] / t['per_request']:.2f} | {b['per_request'] / a['per_request']:.2f} |")
        out.append("")

out.append("""## Postgres driver: sqlx 0.8 or 0.9

Measured 2026-12-04 with `bash benches/sqlx-driver/run.sh` (valgrind; exact counts, so one run
is enough), not re-run by this script: client instructions per session read
(`SELECT data, expires, version … WHERE id = $1 AND expires > $2`, 1.3 KB payload, one
task, plaintext on loopback), the same statement through each version.

| sqlx | executed on `&PgPool` | on an acquired connection |
|---|---|---|
| 0.8.6 | 21,058 | 19,811 |
| 0.9.1 (0.9.0 within 1 %) | 34,103 (1.62× 0.8) | 24,580 (1.24× 0.8) |

Where 0.9 spends it: its `Pool::acquire` future is 8,608 bytes against 1,136 in 0.8, and
executing on `&Pool` boxes that future inside the statement's; copying it (`memcpy`) was 40 %
of all client instructions of the 0.9 run. Pool options, statement caching, logging, protocol
messages and row decoding were compared in both versions' sources and are the same; no 0.9
setting removes the difference. 0.9.0 also stopped setting `TCP_NODELAY` (0.9.1 sets it
again), which does not matter for one-segment statements on loopback. So the workspace is on
sqlx 0.8.6, and every statement of `SqlStore` runs on an explicitly acquired connection (one the store keeps between statements: `stores/sqlx/src/conns.rs`).

The 1.17-1.39× gap between the two raw floors in earlier runs of this file had a second cause:
the floor built on sqlx 0.8 (and tower-sessions-sqlx-store, which enables no TLS feature) talked
plaintext, while ours and the 0.9 floor, built with rustls, negotiated TLS with this server
(`ssl = on`, sqlx's default `sslmode=prefer`). TLS costs about 18k client instructions per
read here (table below). All libraries now share one sqlx with the same features, so they all
use TLS in the throughput sections.
""")

chart = []
for level, title in (("manager", "Manager level, 64 concurrent tasks"), ("store", "Store level, 64 concurrent tasks")):
    if not pick(level):
        out.append(f"## {title}\n\nNot measured in this run.\n")
        continue
    out.append(f"## {title}\n")
    out.append("The libraries of a backend take turns in rounds of 1-second slices (seven rounds per "
               "workload, each starting with the next library). ops/s is ours' median slice (absolute, "
               "noisy); a ratio is the median over rounds of ours ÷ the other in the same round, so drift "
               "in machine load cancels out. Targets: Redis ≥ 1.5× tower-sessions and ≥ 0.9× the raw "
               "floor; Postgres, SQLite and MySQL ≥ 1.1× tower-sessions on read and write, ≥ 1× on new "
               "and touch, and ≥ 0.95× the raw floor.\n")
    out.append("| backend | workload | ours ops/s | ÷ tower-sessions | ÷ actix-session | ÷ raw floor | errors |")
    out.append("|---|---|---|---|---|---|---|")
    for backend in ("memory", "redis", "postgres", "sqlite", "mysql", "mongo"):
        for w in WL:
            o = one(level, backend=backend, lib="ours", workload=w)
            if not o:
                continue
            t = one(level, backend=backend, lib="tower-sessions", workload=w)
            a = one(level, backend=backend, lib="actix-session", workload=w)
            f = one(level, backend=backend, lib="raw floor", workload=w)
            target = backend in ("redis", "postgres", "sqlite", "mysql")
            def cell(other, need):
                if not other or not other["ops_per_sec"]:
                    return "n/a"
                r = paired(o, other)
                return mark(f"{r:.2f}x", r >= need) if (target and need) else f"{r:.2f}x"
            errs = sum((x or {}).get("errors", 0) for x in (o, t, a, f))
            sql_t = 1.1 if w in ("read", "write") else 1.0
            need_t = {"redis": 1.5, "postgres": sql_t, "sqlite": sql_t, "mysql": sql_t}.get(backend)
            need_f = {"redis": 0.9, "postgres": 0.95, "sqlite": 0.95, "mysql": 0.95}.get(backend)
            out.append(f"| {backend} | {w} | {o['ops_per_sec']:.0f} | {cell(t, need_t)} | {cell(a, None)} | {cell(f, need_f)} | {errs} |")
            if level == "manager" and t and t["ops_per_sec"]:
                chart.append((f"{backend} {w}", paired(o, t)))
    out.append("")
    sql = [b for b in ("postgres", "sqlite", "mysql") if one(level, backend=b, lib="raw floor", workload="read")]
    if sql:
        out.append("SQL backends: ours, tower-sessions-sqlx-store and the raw floor run on the same sqlx "
                   "(0.8), in the same rounds, so each library's own client cost shows against one "
                   "driver.\n")
        out.append("| backend | workload | ours ÷ floor | tower-sessions ÷ floor | ours ÷ tower-sessions |")
        out.append("|---|---|---|---|---|")
        for backend in sql:
            for w in WL:
                f = one(level, backend=backend, lib="raw floor", workload=w)
                o = one(level, backend=backend, lib="ours", workload=w)
                t = one(level, backend=backend, lib="tower-sessions", workload=w)
                ratio = lambda a, b: f"{paired(a, b):.2f}x" if a and b and b["ops_per_sec"] else "n/a"
                out.append(f"| {backend} | {w} | {ratio(o, f)} | {ratio(t, f)} | {ratio(o, t)} |")
        out.append("")

# HTTP
out.append("## HTTP (axum, wrk -t2 -c64)\n")
http = pick("http")
if http:
    out.append("Ratios: requests/s ÷ the same app without a session layer, sent the same requests (a session cookie each) "
               "(target ≥ 0.85 for ours/memory), and ours ÷ tower-sessions. Per workload every variant's app is built once, "
               "then `wrk` runs on each in rounds (nine by default, each round starting with the next variant); req/s is "
               "the median run, a ratio the median over rounds of the two runs of the same round.\n")
    out.append("| variant | " + " | ".join(WL) + " |")
    out.append("|---|" + "---|" * len(WL))
    base = {w: (one("http", variant="none", workload=w) or {}).get("requests_per_sec") for w in WL}
    out.append("| no session layer (req/s) | " + " | ".join(f"{base[w]:.0f}" if base[w] else "n/a" for w in WL) + " |")
    for v in ("noop-layer", "ours/memory", "tower-sessions/memory", "ours/redis", "tower-sessions/redis", "ours/postgres", "tower-sessions/postgres"):
        cells = []
        for w in WL:
            r = one("http", variant=v, workload=w)
            if not r or not base[w]:
                cells.append("n/a")
                continue
            x = paired(r, one("http", variant="none", workload=w))
            c = f"{x:.2f}x"
            if v == "ours/memory":
                c = mark(c, x >= 0.85)
            if r.get("non_2xx"):
                c += f" ({r['non_2xx']} non-2xx)"
            cells.append(c)
        out.append(f"| {v} ÷ none | " + " | ".join(cells) + " |")
    for b in ("memory", "redis", "postgres"):
        cells = []
        for w in WL:
            o, t = one("http", variant=f"ours/{b}", workload=w), one("http", variant=f"tower-sessions/{b}", workload=w)
            cells.append(f"{paired(o, t):.2f}x" if o and t and t["requests_per_sec"] else "n/a")
            if o and t and b != "memory":
                chart.append((f"HTTP {b} {w}", paired(o, t)))
        out.append(f"| ours ÷ tower-sessions, {b} | " + " | ".join(cells) + " |")
    cells = []
    for w in WL:
        o, n = one("http", variant="ours/memory", workload=w), one("http", variant="noop-layer", workload=w)
        cells.append(f"{paired(o, n):.2f}x" if o and n and n["requests_per_sec"] else "n/a")
    out.append("| ours/memory ÷ noop-layer | " + " | ".join(cells) + " |")
    out.append("")
    if one("instructions", lib="axum-ours", workload="read"):
        out.append("Instructions per request of the same axum apps called in process (the `ops` example's "
                   "`axum-none`, `axum-noop`, `axum-ours`: no network, no HTTP parsing), under cachegrind; "
                   "the last row is what our layer adds beyond axum's cost of any layer, and the manager row the "
                   "part of it that is the session's load, handler work and commit.\n")
        out.append("| instructions | " + " | ".join(WL) + " |")
        out.append("|---|" + "---|" * len(WL))
        per = lambda lib, w: (one("instructions", lib=lib, workload=w) or {}).get("per_request")
        for lib, label in (("axum-none", "no session layer"), ("axum-noop", "noop-layer"), ("axum-ours", "ours/memory")):
            out.append(f"| {label} | " + " | ".join(str(per(lib, w) or "n/a") for w in WL) + " |")
        out.append("| ours/memory − noop-layer | " + " | ".join(
            str(per("axum-ours", w) - per("axum-noop", w)) if per("axum-ours", w) and per("axum-noop", w) else "n/a" for w in WL) + " |")
        out.append("| of which the manager (load, handler work, commit) | " + " | ".join(str(per("ours", w) or "n/a") for w in WL) + " |")
        out.append("")
    out.append("`noop-layer` is the app without sessions behind a tower layer that does nothing "
               "(`MapRequestLayer` with the identity): what axum charges for routing through any layer. "
               "`ours/memory ÷ noop-layer` is then the session's own share.\n")
else:
    out.append("Not measured in this run.\n")

# round trips
out.append("## Round trips per request (server counters)\n")
trips = pick("trips")
if trips:
    out.append("Redis: a private server's `total_writes_processed` (one reply batch per round trip, so a pipeline "
               "counts once) after `CONFIG RESETSTAT`, less deadpool's PING health checks; the commands column is "
               "`INFO commandstats` (which also counts commands run inside `EVALSHA`). tower-sessions and "
               "actix-session have no not-due state: their rolling expiry writes on every request. "
               "Postgres: `pg_stat_database` transactions of a database of its own (one per autocommit statement), "
               "the difference between two fresh library instances serving 20 and 220 requests (backends publish "
               "their counters late, so both are counted until their pools close; connection set-up and statement "
               "preparation cancel out). MySQL: the server's `Questions` (statements clients sent; pings and "
               "prepares excluded) over 200 requests of a library instance that has served 20 already. MongoDB: the "
               "server's `network.numRequests` (`serverStatus`), counted the same way. Targets for ours: read 1, "
               "write 2, touch 2, not-due 1.\n")
    out.append("| backend | library | workload | per request | commands |")
    out.append("|---|---|---|---|---|")
    target = {"read": 1, "write": 2, "touch": 2, "not-due": 1}
    for r in trips:
        v = f"{r['per_request']:.2f}"
        if r["lib"] == "ours" and r["workload"] in target:
            v = mark(v, round(r["per_request"], 1) <= target[r["workload"]])
        out.append(f"| {r['backend']} | {r['lib']} | {r['workload']} | {v} | {r.get('detail','')} |")
    out.append("")
else:
    out.append("Not measured in this run.\n")

# memory
out.append("## MemoryStore memory per session\n")
mem = pick("memory")
if mem:
    out.append("RSS growth while inserting N sessions of one small key (`user` = 42), divided by N. "
               "Overhead = RSS per session − (id bytes + key and value bytes). Then every record expires, "
               "one sweep runs, and N fresh sessions are inserted: the RSS growth on refill shows whether "
               "the swept memory is reused. Target: ≤ 150 bytes overhead at 1M sessions.\n")
    out.append("| library | sessions | RSS/session (B) | overhead (B) | swept | left after sweep | RSS growth on refill (B/session) |")
    out.append("|---|---|---|---|---|---|---|")
    for r in mem:
        ov = r["overhead_beyond_id_and_user_data"]
        ovs = mark(f"{ov:.0f}", ov <= 150) if r["lib"] == "ours" else f"{ov:.0f}"
        out.append(f"| {r['lib']} | {r['sessions']} | {r['rss_per_session']:.0f} | {ovs} | {r.get('swept','')} | "
                   f"{r.get('left_after_sweep','')} | {r['rss_growth_on_refill_per_session']:.1f} |" if "swept" in r else
                   f"| {r['lib']} | {r['sessions']} | {r['rss_per_session']:.0f} | {ovs} | | | |")
    out.append("")
    if any(r["lib"] == "plain" for r in mem):
        out.append("`plain` and `plain-encoded` are the plain stores of the next section, measured each in a "
                   "process of its own (`memory-plain`, `memory-encoded`).\n")
else:
    out.append("Not measured in this run.\n")

# issue #25: MemoryStore against the simplest stores
PLAIN = (("plain", "`Record` clones"), ("plain-encoded", "payload envelopes"))
if any(r.get("lib") in ("plain", "plain-encoded") for r in rows):
    out.append("## MemoryStore against plain stores: what the layout buys\n")
    out.append("Today's `MemoryStore` (64 shards of `hashbrown::HashTable`s whose entries are one allocation "
               "holding the id and the payload envelope, shared by reads, whose data decodes lazily) against the "
               "simplest stores that pass the same conformance suite (`benches/peers/src/plain.rs`, "
               "`benches/peers/tests/plain_conformance.rs`): 64 shards of `Mutex<HashMap<String, _>>` keeping "
               "either a clone of the `Record` (**plain**; a read clones it back) or its payload envelope in a "
               "`Box<[u8]>` (**plain-encoded**; a read decodes a copy), with the same expiry on read, sweeps and "
               "owner index. Same manager, same workloads, same runs as the sections above. Ratios are plain ÷ "
               "today's, so above 1 the plain store costs more; the decision rule: keep the plain store where it "
               "is within 1.10 on cost and meets the memory target.\n")
    per = lambda lib, w: (one("instructions", lib=lib, workload=w) or {}).get("per_request")
    out.append("Instructions per manager request (cachegrind, exact; the decisive measurement on this shared "
               "machine), then time per request as a ratio to today's from the alternating rounds: one task "
               "inline (`cost`), and 64 concurrent tasks at the store and the manager levels.\n")
    out.append("| workload | ours instructions | plain | ÷ ours | plain-encoded | ÷ ours | time ÷ ours, one task (plain, encoded) | store level, 64 tasks | manager level, 64 tasks |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    def tratio(section, lib, w):
        o = one(section, backend="memory", lib="ours", workload=w)
        p = one(section, backend="memory", lib=lib, workload=w)
        if not o or not p or not o["ops_per_sec"] or not p["ops_per_sec"]:
            return "n/a"
        return f"{1 / paired(p, o):.2f}"
    verdict = {}
    for w in WL:
        io = per("ours", w)
        cells = [str(io or "n/a")]
        for lib, _ in PLAIN:
            ip = per(lib, w)
            if io and ip:
                r = ip / io
                verdict.setdefault(lib, []).append(r)
                cells += [str(ip), mark(f"{r:.3f}", r <= 1.10)]
            else:
                cells += [str(ip or "n/a"), "n/a"]
        for section in ("cost", "store", "manager"):
            cells.append(", ".join(tratio(section, lib, w) for lib, _ in PLAIN))
        out.append(f"| {w} | " + " | ".join(cells) + " |")
    out.append("")
    ours_mem = one("memory", lib="ours")
    out.append("| store | RSS/session at 1M sessions (B) | overhead (B, target ≤ 150) | RSS ÷ ours | worst instructions ÷ ours | kept? |")
    out.append("|---|---|---|---|---|---|")
    for lib, what in (("ours", "today's"),) + PLAIN:
        m = one("memory", lib=lib)
        rss = f"{m['rss_per_session']:.0f}" if m else "n/a"
        ov = mark(f"{m['overhead_beyond_id_and_user_data']:.0f}", m["overhead_beyond_id_and_user_data"] <= 150) if m else "n/a"
        rel = f"{m['rss_per_session'] / ours_mem['rss_per_session']:.2f}" if m and ours_mem else "n/a"
        if lib == "ours":
            out.append(f"| ours ({what}) | {rss} | {ov} | 1.00 | 1.00 | |")
            continue
        worst = max(verdict.get(lib) or [0]) or None
        ok = (m is not None and m["overhead_beyond_id_and_user_data"] <= 150
              and worst is not None and worst <= 1.10 and len(verdict.get(lib, [])) == len(WL))
        out.append(f"| {lib} ({what}) | {rss} | {ov} | {rel} | {f'{worst:.2f}' if worst else 'n/a'} | "
                   f"{'yes' if ok else 'no'} |")
    out.append("")
    kept = [lib for lib, _ in PLAIN if (m := one("memory", lib=lib)) and m["overhead_beyond_id_and_user_data"] <= 150
            and len(verdict.get(lib, [])) == len(WL) and max(verdict[lib]) <= 1.10]
    if kept:
        out.append(f"Conclusion: {', '.join(kept)} stays within 10 % on cost and meets the memory target, so "
                   "the simpler store is the one to keep.\n")
    else:
        out.append("Conclusion: no plain store stays within 10 % on cost and meets the memory target, so "
                   "today's `MemoryStore` stays.\n")
    out.append("Where the difference comes from: a `Record` kept as it is carries its whole struct in the table "
               "slot (data, expiry, codec, extra fields, creation time, lifetime, owner, label) and its data as a "
               "`BTreeMap` node sized for eleven entries, however few it holds, plus one allocation per key and "
               "value; a write copies that map (copy on write) where today's store encodes one buffer. The plain "
               "envelope keeps memory close but copies and decodes the payload on every read, where today's "
               "store shares its one allocation and decodes lazily. Both plain stores hash each id twice (shard, "
               "then map).\n")

def sections(text):
    """(title, text) of each `## ` section, the part before the first one titled ""."""
    parts, title, lines = [], "", []
    for line in text.split("\n"):
        if line.startswith("## "):
            parts.append((title, "\n".join(lines)))
            title, lines = line, []
        lines.append(line)
    parts.append((title, "\n".join(lines)))
    return parts

# Sections written by hand (measurements this script does not make, e.g. the near-caches')
# are carried over from the previous BENCHMARKS.md, each after the section it followed.
rendered = sections("\n".join(out) + "\n")
generated = {t for t, _ in rendered}
try:
    previous = sections(open("BENCHMARKS.md").read())
except FileNotFoundError:
    previous = []
after = {}
anchor = ""
for title, text in previous:
    if title in generated:
        anchor = title
    elif title:
        after.setdefault(anchor, []).append(text)
merged = []
for title, text in rendered:
    merged.append(text)
    merged.extend(after.pop(title, []))
for rest in after.values():
    merged.extend(rest)
open("BENCHMARKS.md", "w").write("\n".join(m.rstrip("\n") + "\n" for m in merged))

# chart: horizontal bars of ours ÷ tower-sessions
W, bar, gap, left = 720, 18, 6, 170
if not chart:
    chart = [("no data", 0.0)]
top = 50
H = top + len(chart) * (bar + gap) + 40
mx = max(2.0, max(v for _, v in chart) * 1.1)
sx = lambda v: left + (W - left - 30) * v / mx
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<text x="{W/2}" y="22" text-anchor="middle" font-size="15">Throughput, session-store ÷ tower-sessions (64 concurrent; &gt; 1 is faster)</text>']
for ref, colour in ((1.0, "#888"), (1.5, "#2a7")):
    x = sx(ref)
    svg.append(f'<line x1="{x:.1f}" y1="{top-8}" x2="{x:.1f}" y2="{H-30}" stroke="{colour}" stroke-dasharray="4 3"/>')
    svg.append(f'<text x="{x:.1f}" y="{H-14}" text-anchor="middle" fill="{colour}">{ref}x</text>')
for i, (label, v) in enumerate(chart):
    y = top + i * (bar + gap)
    colour = "#2a7" if v >= 1.5 else ("#49c" if v >= 1.0 else "#d54")
    svg.append(f'<text x="{left-8}" y="{y+bar-5}" text-anchor="end">{html.escape(label)}</text>')
    svg.append(f'<rect x="{left}" y="{y}" width="{max(0.0, sx(v)-left):.1f}" height="{bar}" fill="{colour}"/>')
    svg.append(f'<text x="{sx(v)+4:.1f}" y="{y+bar-5}">{v:.2f}x</text>')
svg.append("</svg>")
open("benches/chart.svg", "w").write("\n".join(svg) + "\n")
print("wrote BENCHMARKS.md and benches/chart.svg")
PY
