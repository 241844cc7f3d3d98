#!/usr/bin/env bash
# Runs Hailstorm locally: installs what is missing (apt: redis-server, etcd-server, libhiredis-dev,
# libsqlite3-dev), builds the release binaries, then `hailstorm up` — Redis, etcd and every service as its
# own process on 127.0.0.1, kept alive by a supervisor that restarts what dies — and `hailstorm demo`, a
# simulated city (drivers, riders, a flash sale, rides in both dispatch modes, payments, settlement).
# Hailstorm keeps running afterwards: `hailstorm status`, `hailstorm logs NAME`, `hailstorm down`.
#
#   scripts/run.sh [--no-demo] [--debug] [--gateway-port 8080] [--run-dir .hailstorm/run] [--redis-cluster 6]
#
# --redis-cluster N runs Redis as a Redis Cluster of N nodes (6: three masters, each with a replica).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

demo=1
configuration=release
gateway_port=8080
run_dir=.hailstorm/run
redis_cluster=
while [ $# -gt 0 ]; do
    case "$1" in
        --no-demo) demo=0 ;;
        --debug) configuration=debug ;;
        --gateway-port) gateway_port=$2; shift ;;
        --run-dir) run_dir=$2; shift ;;
        --redis-cluster) redis_cluster=$2; shift ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

ensure_packages

say "Building Hailstorm ($configuration; the first build takes several minutes)"
swift build -c "$configuration"
bin=$(swift build -c "$configuration" --show-bin-path)
hailstorm="$bin/hailstorm"

extra=()
# Unoptimised bcrypt at the production cost takes seconds per sign-in; a --debug run uses a cheaper one.
[ "$configuration" = debug ] && extra=(--option login:auth-bcrypt-cost=6)
[ -n "$redis_cluster" ] && extra+=(--redis-cluster "$redis_cluster")
say "Starting Hailstorm: $hailstorm up --run-dir $run_dir --gateway-port $gateway_port ${extra[*]}"
"$hailstorm" up --run-dir "$run_dir" --gateway-port "$gateway_port" "${extra[@]}"

if [ "$demo" = 1 ]; then
    say "Demo city: $hailstorm demo --run-dir $run_dir"
    "$hailstorm" demo --run-dir "$run_dir"
fi

say "Hailstorm keeps running on http://127.0.0.1:$gateway_port"
cat <<INFO
  $hailstorm status --run-dir $run_dir      each instance's health, port, pid, restarts, uptime
  $hailstorm logs gateway --run-dir $run_dir
  $hailstorm demo --run-dir $run_dir        the city again
  $bin/hailstorm-load flash-sale --rate 500 --duration 10 --run-dir $run_dir --out load-report
  $hailstorm down --run-dir $run_dir        stop everything
INFO
