#!/usr/bin/env bash
# The project's test command: starts every service the tests need, then runs all tests.
#   bash scripts/test.sh
# Services: PostgreSQL, Redis and MariaDB on their standard loopback ports (started if down),
# a 6-node Redis Cluster (7000-7005), a Redis Sentinel set-up (6390/6391, 26390-26392) and a
# MongoDB-compatible server (SecantusDB, 27917), each started by its own script, and the Node
# packages of the express-session interop tests (npm ci from interop/node/package-lock.json).
# Whatever of these the machine lacks (servers, Node.js, Python) scripts/provision.sh installs
# first with apt when run as root; without root it names what is missing and stops.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/provision.sh
bash scripts/services.sh
bash scripts/redis-cluster.sh start
bash scripts/redis-sentinel.sh start
bash scripts/mongo.sh start
bash scripts/node-interop.sh install

export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
export REDIS_CLUSTER_URLS=${REDIS_CLUSTER_URLS:-redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://127.0.0.1:7002,redis://127.0.0.1:7003,redis://127.0.0.1:7004,redis://127.0.0.1:7005}
export REDIS_SENTINEL_URLS=${REDIS_SENTINEL_URLS:-redis://127.0.0.1:26390,redis://127.0.0.1:26391,redis://127.0.0.1:26392}
export REDIS_SENTINEL_MASTER=${REDIS_SENTINEL_MASTER:-mymaster}
export POSTGRES_URL=${POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
export MYSQL_URL=${MYSQL_URL:-mysql://root@127.0.0.1:3306/test}
export MONGODB_URL=${MONGODB_URL:-$(bash scripts/mongo.sh url)}

cargo test --workspace --all-features --no-fail-fast
# The Redis failover tests start their own Sentinel and Cluster set-ups on fixed private
# ports (6590-6592, 26590-26592, 7200-7205): ignored in the run above, run one at a time here.
cargo test -p session-reliability --test failover -- --ignored --test-threads 1
