#!/bin/sh
# Joins the compose stack's Redis nodes (REDIS_CLUSTER_HOSTS, six by default: three masters, three
# replicas) into a Redis Cluster, once: when the first node already serves slots nothing is changed.
# Waits for every node to answer first, and afterwards until the cluster serves every slot.
# `redis-cli --cluster create` takes addresses, so the hosts are resolved first; the nodes announce those
# addresses to their clients.
set -eu
password="${REDIS_PASSWORD:-}"
if [ -z "$password" ] && [ -n "${REDIS_PASSWORD_FILE:-}" ]; then
    password=$(cat "$REDIS_PASSWORD_FILE")
fi
export REDISCLI_AUTH="$password"
hosts="${REDIS_CLUSTER_HOSTS:-redis redis-2 redis-3 redis-4 redis-5 redis-6}"
first=${hosts%% *}
# retry N WHAT COMMAND…: runs COMMAND once a second until it succeeds, N times at most; then says WHAT
# did not happen and fails.
retry() {
    limit=$1 what=$2 tries=0
    shift 2
    until "$@"; do
        tries=$((tries + 1))
        if [ "$tries" -ge "$limit" ]; then
            echo "redis-cluster-init: $what" >&2
            exit 1
        fi
        sleep 1
    done
}
# answering HOST: sets address to HOST's address once it resolves and Redis there answers PING.
answering() {
    address=$(getent hosts "$1" | awk '{ print $1; exit }') && [ -n "$address" ] \
        && redis-cli -h "$address" PING 2>/dev/null | grep -q PONG
}
serving() { redis-cli -h "$first" CLUSTER INFO | grep -q '^cluster_state:ok'; }

# Every node answering first (a runner may start this before the nodes are up): two minutes at most.
addresses=""
for host in $hosts; do
    retry 120 "$host does not answer" answering "$host"
    addresses="$addresses $address:6379"
done
if redis-cli -h "$first" CLUSTER INFO | grep -q '^cluster_slots_assigned:0'; then
    # shellcheck disable=SC2086
    redis-cli --cluster create $addresses --cluster-replicas "${REDIS_CLUSTER_REPLICAS:-1}" --cluster-yes
fi
retry 60 "the cluster did not reach cluster_state:ok in 60 s" serving
echo "redis-cluster-init: the cluster serves every slot"
