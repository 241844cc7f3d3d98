#!/usr/bin/env bash
# The whole platform on a Redis Cluster: `hailstorm up --redis-cluster 6` (six Debian redis-servers in
# cluster mode, three masters each with a replica, on loopback), order in three shards, coupon and payment
# in two, ad in two, matching for two cities (`--replicas order=3,coupon=2,payment=2,ad=2,matching=2`;
# `--replicas ''` for one of each), in a throwaway run
# folder, then
# `hailstorm demo` — sign-ups, a flash sale over stock buckets on three masters, rides in both dispatch
# modes, payments with coupons, ads, settlement, reconciliation and analytics — which exits non-zero on
# any error or mismatch; then `hailstorm down`.
#
#   scripts/cluster-demo.sh [--bin-dir DIR] [--nodes 6] [--replicas order=3,coupon=2,payment=2,ad=2,matching=2]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

bin_dir=.build/release
nodes=6
replicas=order=3,coupon=2,payment=2,ad=2,matching=2
# Matching split by city: Berlin (where the demo plays) and Hamburg, an instance each.
cities='Berlin@52.52,13.405,40000,Europe/Berlin;Hamburg@53.55,9.99,40000,Europe/Berlin'
while [ $# -gt 0 ]; do
    case "$1" in
        --bin-dir) bin_dir=$2; shift 2 ;;
        --nodes) nodes=$2; shift 2 ;;
        --replicas) replicas=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
[ -x "$bin_dir/hailstorm" ] || { echo "no hailstorm in $bin_dir: build first (swift build -c release)" >&2; exit 2; }

throwaway_run cluster

say "Starting Hailstorm on a $nodes-node Redis Cluster (gateway on 127.0.0.1:$port; shards: ${replicas:-none})"
"$bin_dir/hailstorm" up --run-dir "$run_dir" --gateway-port "$port" --bin-dir "$bin_dir" --no-prometheus \
    --redis-cluster "$nodes" ${replicas:+--replicas "$replicas"} --option "matching:matching-cities=$cities" \
    >"$run_dir/up.log" 2>&1 || { cat "$run_dir/up.log" >&2; exit 1; }
say "The demo city on the cluster"
"$bin_dir/hailstorm" demo --run-dir "$run_dir"
