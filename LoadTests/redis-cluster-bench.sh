#!/usr/bin/env bash
# What Redis Cluster routing costs RedisKit's client: a cluster of three masters (and three replicas) from
# Debian's redis-server on free loopback ports, then `hailstorm-redis-bench --cluster-port`, which sets the
# pooled client on the cluster against the same client on one server, with redis-benchmark (-r, and
# --cluster) beside each in the same run. Prints the bench's JSON; stops the cluster at the end.
#
#   LoadTests/redis-cluster-bench.sh [--bin-dir DIR] [bench options: --requests N --rounds N …]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

bin=".build/release"
if [ "${1:-}" = "--bin-dir" ]; then bin="$2"; shift 2; fi
ensure_packages
if [ ! -x "$bin/hailstorm-redis-bench" ]; then
    say "Building hailstorm-redis-bench (release)"
    swift build -c release --product hailstorm-redis-bench
fi

dir=$(mktemp -d /tmp/hailstorm-redis-cluster.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

nodes=()
for _ in 1 2 3 4 5 6; do
    port=$(free_port)
    bus=$(free_port)
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
        --cluster-enabled yes --cluster-config-file "nodes-$port.conf" --cluster-port "$bus" \
        --cluster-node-timeout 2000 --daemonize no --logfile "$dir/redis-$port.log" &
    pids+=($!)
    wait_for_port "$port" 10 || { echo "redis-server $port did not start; see $dir/redis-$port.log" >&2; exit 1; }
    nodes+=("127.0.0.1:$port")
done
say "Creating a Redis Cluster of ${#nodes[@]} nodes (3 masters, 3 replicas)"
redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$dir/create.log"
first=${nodes[0]#127.0.0.1:}
for _ in $(seq 1 100); do
    redis-cli -p "$first" cluster info | grep -q cluster_state:ok && break
    sleep 0.1
done
"$bin/hailstorm-redis-bench" --cluster-port "$first" "$@"
