#!/usr/bin/env bash
# The compose check: builds every image (services from static release binaries, Redis, etcd and
# Prometheus from Debian's packages, on a base image made locally when no registry answers), starts the
# stack of compose/docker-compose.yml with podman-compose, waits until every container is healthy and
# Prometheus scrapes every service container and etcd, plays a small
# city through the composed gateway (rides in both dispatch modes, a flash sale, payments, a settlement
# batch, the reconciliation), kills a service container with SIGKILL and waits until it is back and the
# stack healthy (and scraped) again, then tears it all down. Installs what is missing (podman, podman-compose,
# debootstrap). Exit 0 only when every step held.
#
#   scripts/compose-test.sh [--keep] [--redis-cluster] [--shards]
#
# --keep leaves the stack running for a look, failed or not; --redis-cluster adds
# compose/docker-compose.redis-cluster.yml (six Redis nodes joined into a Redis Cluster by a one-shot
# container, every service a cluster client); --shards adds that and compose/docker-compose.shards.yml
# (order in three shards, coupon, payment and ad in two, matching in two cities: six more containers).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
source scripts/containers.sh

keep=0
redis_cluster=0
shards=0
for argument in "$@"; do
    case "$argument" in
        --keep) keep=1 ;;
        --redis-cluster) redis_cluster=1 ;;
        --shards) redis_cluster=1; shards=1 ;;
        *) echo "unknown option $argument" >&2; exit 2 ;;
    esac
done

ensure_packages
ensure_podman
ensure_base_image
prepare_release_binaries
build_images dev

project="hailstorm-check-$$"
work=$(mktemp -d /tmp/hailstorm-compose.XXXXXX)
compose=(podman-compose -p "$project" -f compose/docker-compose.yml)
# The cluster's five more nodes and the container that joins them (which exits once it has).
more_containers=0
if [ "$redis_cluster" = 1 ]; then
    compose+=(-f compose/docker-compose.redis-cluster.yml)
    more_containers=6
fi
if [ "$shards" = 1 ]; then
    # order-1, order-2, coupon-1, payment-1, ad-1 and matching-1.
    compose+=(-f compose/docker-compose.shards.yml)
    more_containers=$((more_containers + 6))
fi
export HAILSTORM_TAG=dev
random_hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }
# Token keys (a private key per service, the JWKS of them all), Redis's and etcd's passwords.
"$release_bin/hailstorm" keys --out "$work/keys" --env "$work/keys.env" >/dev/null
# Read line by line, not sourced: the JWKS is JSON, whose quotes the shell would strip.
while IFS='=' read -r name value; do
    [ -n "$name" ] && export "$name=$value"
done <"$work/keys.env"
export HAILSTORM_REDIS_PASSWORD HAILSTORM_ETCD_ROOT_PASSWORD HAILSTORM_ETCD_PASSWORD
HAILSTORM_REDIS_PASSWORD=$(random_hex 24)
HAILSTORM_ETCD_ROOT_PASSWORD=$(random_hex 16)
HAILSTORM_ETCD_PASSWORD=$(random_hex 16)
export HAILSTORM_ADMIN_PHONE="+19990000001"
export HAILSTORM_ADMIN_PASSWORD
HAILSTORM_ADMIN_PASSWORD=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
export HAILSTORM_GATEWAY_PORT HAILSTORM_PROMETHEUS_PORT
HAILSTORM_GATEWAY_PORT=$(free_port)
HAILSTORM_PROMETHEUS_PORT=$(free_port)
printf '{"phone": "%s", "password": "%s"}\n' "$HAILSTORM_ADMIN_PHONE" "$HAILSTORM_ADMIN_PASSWORD" >"$work/admin.json"

teardown() {
    local status=$?
    if [ "$status" -ne 0 ]; then
        say "Failed; the last lines of each container's log:"
        for container in $(podman ps -a --filter "label=io.podman.compose.project=$project" --format '{{.Names}}'); do
            echo "--- $container"
            podman logs --tail 15 "$container" 2>&1 || true
        done
    fi
    if [ "$keep" = 1 ]; then
        say "The stack keeps running: gateway on http://127.0.0.1:$HAILSTORM_GATEWAY_PORT, admin in $work/admin.json"
        # podman alone: the compose file needs this run's variables, which the shell that reads this lacks.
        local filter="label=io.podman.compose.project=$project"
        echo "  stop it: export CONTAINERS_CONF=$CONTAINERS_CONF CONTAINERS_STORAGE_CONF=$CONTAINERS_STORAGE_CONF"
        echo "           podman ps -aq --filter $filter | xargs -r podman rm -f"
        echo "           podman volume ls -q --filter $filter | xargs -r podman volume rm -f; podman network rm -f ${project}_default"
    else
        say "Stopping the stack"
        "${compose[@]}" down -v >"$work/down.log" 2>&1 || true
        podman volume ls -q --filter "label=io.podman.compose.project=$project" | xargs -r podman volume rm -f >/dev/null 2>&1 || true
        podman network rm -f "${project}_default" >/dev/null 2>&1 || true
        rm -rf "$work"
    fi
    exit "$status"
}
trap teardown EXIT

containers() { podman ps -a --filter "label=io.podman.compose.project=$project" --format '{{.Names}}'; }

# Podman runs a container's health check only when asked (it schedules them with systemd timers, which
# this machine may not have), so the check is run here, for each container, until all pass.
wait_healthy() {
    local deadline=$((SECONDS + $1)) unhealthy container
    while :; do
        unhealthy=()
        for container in $(containers); do
            # The cluster's one-shot joiner is done when it exited 0.
            if [[ "$container" == *redis-cluster* ]]; then
                [ "$(podman inspect -f '{{.State.Status}} {{.State.ExitCode}}' "$container")" = "exited 0" ] || unhealthy+=("$container")
                continue
            fi
            podman healthcheck run "$container" >/dev/null 2>&1 || unhealthy+=("$container")
        done
        [ ${#unhealthy[@]} -eq 0 ] && return 0
        if [ $SECONDS -ge $deadline ]; then
            echo "not healthy after $1 s: ${unhealthy[*]}" >&2
            return 1
        fi
        sleep 2
    done
}

# Waits until Prometheus scrapes every service container and etcd, each up.
wait_scraped() {
    local deadline=$((SECONDS + $1)) want=$(( $(hailstorm_services | wc -l) + 1 )) seen
    while :; do
        seen=$(curl -s "http://127.0.0.1:$HAILSTORM_PROMETHEUS_PORT/api/v1/targets?state=active" | python3 -c '
import json, sys
targets = json.load(sys.stdin)["data"]["activeTargets"]
print(sum(t["health"] == "up" for t in targets), len(targets), " ".join(sorted({t["labels"]["job"] for t in targets if t["health"] == "up"})))
' 2>/dev/null || echo "0 0")
        read -r up total jobs <<<"$seen"
        if [ "$up" -ge "$want" ] && [ "$up" -eq "$total" ]; then
            echo "  Prometheus scrapes $up targets, all up: $jobs"
            return 0
        fi
        if [ $SECONDS -ge $deadline ]; then
            echo "Prometheus: $up of $total targets up after $1 s, $want expected (up: $jobs)" >&2
            return 1
        fi
        sleep 2
    done
}

say "Starting the compose stack ($project; gateway on 127.0.0.1:$HAILSTORM_GATEWAY_PORT)"
"${compose[@]}" up -d >"$work/up.log" 2>&1 || { cat "$work/up.log" >&2; exit 1; }
expected=$(( ${#backend_images[@]} + $(hailstorm_services | wc -l) + more_containers ))
running=$(containers | wc -l)
[ "$running" -eq "$expected" ] || { echo "$running containers, expected $expected" >&2; cat "$work/up.log" >&2; exit 1; }
wait_healthy 240
say "All $expected containers healthy"
podman ps --filter "label=io.podman.compose.project=$project" --format '  {{.Names}}\t{{.Status}}'
wait_scraped 60

say "The command centre's page through the composed gateway, with Debian's Leaflet and Chart.js from its image"
for file in "" lib/leaflet.js lib/leaflet.css lib/chart.js app.js; do
    curl -sf "http://127.0.0.1:$HAILSTORM_GATEWAY_PORT/command/$file" -o "$work/page" || {
        echo "compose-test: /command/$file is not served" >&2; exit 1; }
    echo "  /command/$file: $(wc -c <"$work/page") bytes"
done
# Read from a file: `curl | grep -q` fails under pipefail when grep stops reading before curl is done.
curl -sf "http://127.0.0.1:$HAILSTORM_GATEWAY_PORT/command/" -o "$work/index.html"
grep -q "<title>Hailstorm command centre</title>" "$work/index.html" || {
    echo "compose-test: /command/ is not the command centre's page" >&2; exit 1; }

say "A small city through the composed gateway: rides, a flash sale, payments, settlement"
"$release_bin/hailstorm" demo --gateway "http://127.0.0.1:$HAILSTORM_GATEWAY_PORT" --admin-file "$work/admin.json" \
    --drivers 4 --riders 6 --coupons 3 --sale-in 2 --timeout 150

victim=$(containers | grep -E -- '[-_]order[-_]1$' | head -1)
pid=$(podman inspect -f '{{.State.Pid}}' "$victim")
restarts=$(podman inspect -f '{{.RestartCount}}' "$victim")
say "Killing $victim (pid $pid) with SIGKILL"
kill -9 "$pid"
deadline=$((SECONDS + 60))
until [ "$(podman inspect -f '{{.RestartCount}}' "$victim")" -gt "$restarts" ] \
    && [ "$(podman inspect -f '{{.State.Running}}' "$victim")" = true ]; do
    [ $SECONDS -lt $deadline ] || { echo "$victim was not restarted within 60 s" >&2; exit 1; }
    sleep 1
done
say "$victim restarted (restarts: $(podman inspect -f '{{.RestartCount}}' "$victim"), pid $(podman inspect -f '{{.State.Pid}}' "$victim"))"
wait_healthy 120
wait_scraped 60
say "The stack is healthy again; a ride after the restart"
"$release_bin/hailstorm" demo --gateway "http://127.0.0.1:$HAILSTORM_GATEWAY_PORT" --admin-file "$work/admin.json" \
    --drivers 2 --riders 2 --coupons 1 --sale-in 1 --timeout 120
say "Compose check passed"
