#!/usr/bin/env bash
# Runs Hailstorm's tests: installs what is missing (apt: redis-server, etcd-server, libhiredis-dev,
# libsqlite3-dev), starts Redis and etcd on free loopback ports, builds and runs `swift test`, stops them.
# Extra arguments go to `swift test` (e.g. --filter RedisKitTests).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_packages

run_dir=$(mktemp -d /tmp/hailstorm-test.XXXXXX)
cleanup() {
    stop_pidfile "$run_dir/redis.pid"
    stop_pidfile "$run_dir/etcd.pid"
    rm -rf "$run_dir"
}
trap cleanup EXIT

start_backends "$run_dir"

export HAILSTORM_TEST_REDIS_PORT=$redis_port
export HAILSTORM_TEST_ETCD_ENDPOINT="http://127.0.0.1:$etcd_port"

say "Building (debug) the services and the tests"
swift build --build-tests
say "Running the tests"
# One test at a time: the flash-sale storms saturate a small machine, and the tests that wait on real
# time (lease expiry, deadlines, rate-limit windows) must not share it with them.
swift test --skip-build --no-parallel "$@"
