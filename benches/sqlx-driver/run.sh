#!/usr/bin/env bash
# Client instructions per session read, sqlx 0.8 against 0.9, on executing through `&Pool`
# and on an acquired connection (neither build enables TLS, so both talk plaintext).
#   bash benches/sqlx-driver/run.sh     # POSTGRES_URL, default postgres://postgres@127.0.0.1:5432/test
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-../../target/sqlx-driver}
cargo build --release -q
bin=$CARGO_TARGET_DIR/release/sqlx-driver-bench
n=4000
count() {
    valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null "$@" 2>&1 \
        | awk '/I *refs/ { gsub(",", "", $NF); print $NF }'
}
echo "| sqlx | executed on | instructions per read |"
echo "|---|---|---|"
for v in 08 09; do
    base=$(count "$bin" "$v" none 0)
    for mode in pool conn; do
        total=$(count "$bin" "$v" "$mode" "$n")
        echo "| $v | $mode | $(( (total - base) / n )) |"
    done
done
"$bin" 08 none 0 2>&1 | grep future
"$bin" 09 none 0 2>&1 | grep future
