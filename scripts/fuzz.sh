#!/usr/bin/env bash
# Runs the cargo-fuzz targets of fuzz/ on the committed corpus.
#
#   scripts/fuzz.sh                 # every target, FUZZ_TIME seconds each (default 30)
#   scripts/fuzz.sh cookie_load     # only these targets
#   FUZZ_TIME=600 scripts/fuzz.sh   # the 10-minute runs of RELIABILITY.md
#   scripts/fuzz.sh --cmin          # minimize fuzz/corpus/<target> in place (maintainers)
#
# Env: FUZZ_TIME (seconds per target), FUZZ_SANITIZER (address | none; default address),
# CARGO_TARGET_DIR (honoured; by default the builds are kept per machine in
# ${XDG_CACHE_HOME:-$HOME/.cache}/session-store/fuzz-target/KEY, KEY a hash of fuzz/Cargo.lock,
# so a fresh clone (CI) rebuilds only this workspace's own crates; the last 2 are kept).
# Works on stable Rust through RUSTC_BOOTSTRAP=1 (cargo-fuzz
# passes nightly-only flags), so no nightly toolchain is needed.
#
# New inputs found during a run go to a temporary directory, never into the committed
# corpus. A crash fails the script, names the target and leaves the reproducer in
# fuzz/artifacts/<target>/ (`cargo fuzz run <target> <file>` replays it).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root/fuzz"

fuzz_time="${FUZZ_TIME:-30}"
sanitizer="${FUZZ_SANITIZER:-address}"
export RUSTC_BOOTSTRAP=1

if [ -z "${CARGO_TARGET_DIR:-}" ]; then
    cache="${XDG_CACHE_HOME:-$HOME/.cache}/session-store/fuzz-target"
    CARGO_TARGET_DIR="$cache/$(sha256sum Cargo.lock | cut -c1-16)"
    export CARGO_TARGET_DIR
    mkdir -p "$CARGO_TARGET_DIR"
    touch "$CARGO_TARGET_DIR"
    # Builds for older lock files beyond the last 2 go.
    find "$cache" -mindepth 1 -maxdepth 1 -type d -printf '%T@ %p\n' | sort -rn | tail -n +3 \
        | cut -d' ' -f2- | while read -r old; do rm -rf "$old"; done
    echo "fuzz.sh: builds in $CARGO_TARGET_DIR" >&2
fi

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz missing, installing it (cargo install cargo-fuzz --locked)" >&2
    cargo install cargo-fuzz --locked
fi

cmin=false
targets=()
for arg in "$@"; do
    case "$arg" in
        --cmin) cmin=true ;;
        -*) echo "fuzz.sh: unknown option $arg" >&2; exit 2 ;;
        *) targets+=("$arg") ;;
    esac
done
if [ "${#targets[@]}" -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi
if [ "${#targets[@]}" -eq 0 ]; then
    echo "fuzz.sh: no fuzz targets found in $root/fuzz" >&2
    exit 1
fi

# Longest input per target: cookie values are allowed up to 3 x 4096 raw bytes.
max_len() {
    case "$1" in
        cookie_load) echo 16384 ;;
        *) echo 8192 ;;
    esac
}

echo "fuzz.sh: building ${targets[*]} (sanitizer: $sanitizer)" >&2
for target in "${targets[@]}"; do
    cargo fuzz build --sanitizer "$sanitizer" "$target"
done

if $cmin; then
    for target in "${targets[@]}"; do
        # Edge coverage only (no hit counts), smallest covering set: a few hundred files.
        cargo fuzz cmin --sanitizer "$sanitizer" "$target" "corpus/$target" -- \
            -max_len="$(max_len "$target")" -use_counters=0 -set_cover_merge=1
        echo "fuzz.sh: corpus/$target now holds $(find "corpus/$target" -type f | wc -l) files" >&2
    done
    exit 0
fi

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
failed=()
for target in "${targets[@]}"; do
    if [ ! -d "corpus/$target" ]; then
        echo "fuzz.sh: no committed corpus at fuzz/corpus/$target" >&2
        exit 1
    fi
    mkdir -p "$scratch/$target"
    echo "fuzz.sh: running $target for ${fuzz_time}s" >&2
    if ! cargo fuzz run --sanitizer "$sanitizer" "$target" "$scratch/$target" "corpus/$target" -- \
        -max_total_time="$fuzz_time" -max_len="$(max_len "$target")" -timeout=25 \
        -print_final_stats=1; then
        echo "fuzz.sh: FAILURE: target $target crashed or timed out; reproducer in" \
            "$root/fuzz/artifacts/$target/" >&2
        failed+=("$target")
    fi
done
if [ "${#failed[@]}" -ne 0 ]; then
    echo "fuzz.sh: FAILED targets: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz.sh: ${#targets[@]} targets ran ${fuzz_time}s each without a crash" >&2
