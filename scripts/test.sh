#!/usr/bin/env bash
# The project's test command: starts every service the tests need, then runs all tests.
#   bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/services.sh

export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
export POSTGRES_URL=${POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
export MYSQL_URL=${MYSQL_URL:-mysql://root@127.0.0.1:3306/test}

cargo test --workspace --all-features --no-fail-fast
