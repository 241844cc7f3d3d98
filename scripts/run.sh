#!/usr/bin/env bash
# Runs Hailstorm locally: installs what is missing (apt: redis-server, etcd-server, libhiredis-dev,
# libsqlite3-dev), builds the services (release), starts Redis and etcd on free loopback ports and every
# service (login, order, matching, order-grab, coupon, payment, settlement, gateway) as its own process,
# waits until the gateway is ready, runs a short demo through the gateway (sign-up, a flash-sale claim, a
# whole ride paid with the coupon, a settlement batch, the reconciliation report), and keeps everything
# running until Ctrl-C.
#
#   scripts/run.sh [--no-demo] [--debug] [--gateway-port 8080] [--run-dir .hailstorm/run]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

demo=1
configuration=release
gateway_port=8080
run_dir=.hailstorm/run
while [ $# -gt 0 ]; do
    case "$1" in
        --no-demo) demo=0 ;;
        --debug) configuration=debug ;;
        --gateway-port) gateway_port=$2; shift ;;
        --run-dir) run_dir=$2; shift ;;
        -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

ensure_packages
services=(login order matching order-grab coupon payment settlement gateway)

say "Building the services ($configuration)"
for service in "${services[@]}"; do
    swift build -c "$configuration" --product "hailstorm-$service"
done
bin=$(swift build -c "$configuration" --show-bin-path)

mkdir -p "$run_dir/logs" "$run_dir/data"
run_dir=$(cd "$run_dir" && pwd)
pids=()
stopped=0
cleanup() {
    [ "$stopped" = 1 ] && return
    stopped=1
    say "Stopping Hailstorm"
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    stop_pidfile "$run_dir/redis.pid"
    stop_pidfile "$run_dir/etcd.pid"
}
trap cleanup EXIT INT TERM

start_backends "$run_dir"

# One signing key per run folder, shared by login (signs) and gateway (verifies); never committed.
[ -f "$run_dir/jwt-secret" ] || head -c 48 /dev/urandom | base64 | tr -d '\n=' >"$run_dir/jwt-secret"
chmod 600 "$run_dir/jwt-secret"
export AUTH_JWT_SECRET
AUTH_JWT_SECRET=$(cat "$run_dir/jwt-secret")
# The admin account login creates at start; its phone and password stay in the run folder.
if [ ! -f "$run_dir/admin.json" ]; then
    admin_password=$(head -c 24 /dev/urandom | base64 | tr -d '\n=/+')
    printf '{"phone":"+10000000000","password":"%s"}\n' "$admin_password" >"$run_dir/admin.json"
fi
chmod 600 "$run_dir/admin.json"
export AUTH_ADMIN_PHONE AUTH_ADMIN_PASSWORD
AUTH_ADMIN_PHONE=$(sed -E 's/.*"phone":"([^"]+)".*/\1/' "$run_dir/admin.json")
AUTH_ADMIN_PASSWORD=$(sed -E 's/.*"password":"([^"]+)".*/\1/' "$run_dir/admin.json")

common=(--redis-port "$redis_port" --discovery-etcd-endpoint "http://127.0.0.1:$etcd_port" --data-dir "$run_dir/data")
start_service() {
    local name=$1; shift
    "$bin/hailstorm-$name" "${common[@]}" "$@" >>"$run_dir/logs/$name.log" 2>&1 &
    pids+=($!)
}
login_extra=()
# Unoptimised bcrypt at the production cost takes seconds per sign-in; a --debug run uses a cheaper one.
[ "$configuration" = debug ] && login_extra=(--auth-bcrypt-cost 6)
start_service login --http-port "$(free_port)" "${login_extra[@]}"
start_service order --http-port "$(free_port)"
start_service matching --http-port "$(free_port)"
start_service order-grab --http-port "$(free_port)"
start_service coupon --http-port "$(free_port)"
start_service payment --http-port "$(free_port)"
start_service settlement --http-port "$(free_port)"
start_service gateway --http-port "$gateway_port"

gateway="http://127.0.0.1:$gateway_port"
for _ in $(seq 1 100); do
    curl -fs "$gateway/readyz" >/dev/null 2>&1 && break
    sleep 0.2
done
curl -fs "$gateway/readyz" >/dev/null || { echo "the gateway did not become ready; see $run_dir/logs" >&2; exit 1; }
say "Hailstorm is up: gateway $gateway (logs in $run_dir/logs)"

if [ "$demo" = 1 ]; then
    phone="+4915$(( RANDOM * RANDOM % 100000000 ))"
    say "Demo: a rider signs up through the gateway"
    curl -s -X POST "$gateway/api/v1/auth/signup" -H 'Content-Type: application/json' \
        -d "{\"role\":\"rider\",\"phone\":\"$phone\",\"password\":\"demo-password\",\"name\":\"Demo Rider\"}"
    echo
    say "Demo: signs in and gets tokens"
    tokens=$(curl -s -X POST "$gateway/api/v1/auth/login" -H 'Content-Type: application/json' \
        -d "{\"phone\":\"$phone\",\"password\":\"demo-password\"}")
    echo "$tokens" | cut -c1-160; echo "…"
    access=$(echo "$tokens" | sed -E 's/.*"accessToken":"([^"]+)".*/\1/')
    say "Demo: GET /api/v1/me with the access token"
    curl -s "$gateway/api/v1/me" -H "Authorization: Bearer $access"; echo
    say "Demo: the same without a token (401 problem)"
    curl -s "$gateway/api/v1/me"; echo
    say "Demo: malformed JSON (400 problem naming the problem)"
    curl -s -X POST "$gateway/api/v1/auth/login" -H 'Content-Type: application/json' -d '{"phone": '; echo
    say "Demo: the admin (credentials in $run_dir/admin.json) opens a flash sale of 100 coupons"
    admin_tokens=$(curl -s -X POST "$gateway/api/v1/auth/login" -H 'Content-Type: application/json' \
        -d "{\"phone\":\"$AUTH_ADMIN_PHONE\",\"password\":\"$AUTH_ADMIN_PASSWORD\"}")
    admin=$(echo "$admin_tokens" | sed -E 's/.*"accessToken":"([^"]+)".*/\1/')
    now=$(date +%s)
    campaign_body="{\"name\":\"Demo flash sale\",\"city\":\"demo\",\"kind\":\"amount\",\"amountOffCents\":200,\"minimumFareCents\":500,\"stock\":100,\"perUserLimit\":1,\"startsAt\":$((now - 1)),\"endsAt\":$((now + 3600))}"
    for _ in $(seq 1 50); do
        campaign=$(curl -s -w '\n%{http_code}' -X POST "$gateway/api/v1/admin/coupons/campaigns" \
            -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' -d "$campaign_body")
        [ "$(echo "$campaign" | tail -1)" = 201 ] && break
        sleep 0.2  # the coupon service may still be registering
    done
    campaign=$(echo "$campaign" | head -1)
    echo "$campaign"
    campaign_id=$(echo "$campaign" | sed -E 's/.*"id":"([^"]+)".*/\1/')
    say "Demo: the rider claims a coupon (201), then again (409 limit-reached)"
    claim=$(curl -s -X POST "$gateway/api/v1/coupons/campaigns/$campaign_id/claim" -H "Authorization: Bearer $access")
    echo "$claim"
    coupon_id=$(echo "$claim" | sed -E 's/.*"claimID":"([^"]+)".*/\1/')
    curl -s -X POST "$gateway/api/v1/coupons/campaigns/$campaign_id/claim" -H "Authorization: Bearer $access"; echo
    sleep 0.3
    say "Demo: the rider's wallet"
    curl -s "$gateway/api/v1/coupons/wallet" -H "Authorization: Bearer $access"; echo

    say "Demo: a ride. A driver signs up and goes online near Alexanderplatz"
    driver_phone="+4916$(( RANDOM * RANDOM % 100000000 ))"
    curl -s -o /dev/null -X POST "$gateway/api/v1/auth/signup" -H 'Content-Type: application/json' \
        -d "{\"role\":\"driver\",\"phone\":\"$driver_phone\",\"password\":\"demo-password\",\"name\":\"Demo Driver\"}"
    driver=$(curl -s -X POST "$gateway/api/v1/auth/login" -H 'Content-Type: application/json' \
        -d "{\"phone\":\"$driver_phone\",\"password\":\"demo-password\"}" | sed -E 's/.*"accessToken":"([^"]+)".*/\1/')
    for _ in $(seq 1 50); do
        online=$(curl -s -w '\n%{http_code}' -X POST "$gateway/api/v1/driver/online" -H "Authorization: Bearer $driver" \
            -H 'Content-Type: application/json' -d '{"lat":52.5219,"lon":13.4132}')
        [ "$(echo "$online" | tail -1)" = 200 ] && break
        sleep 0.2  # matching may still be registering
    done
    echo "$online" | head -1
    ride='{"pickup":{"lat":52.5200,"lon":13.4050},"dropoff":{"lat":52.5076,"lon":13.3904}}'
    say "Demo: the rider asks for a quote"
    curl -s -X POST "$gateway/api/v1/rides/quote" -H "Authorization: Bearer $access" -H 'Content-Type: application/json' -d "$ride"; echo
    say "Demo: orders the ride (with an Idempotency-Key, so a retry cannot order twice)"
    order=$(curl -s -X POST "$gateway/api/v1/rides" -H "Authorization: Bearer $access" -H 'Content-Type: application/json' \
        -H "Idempotency-Key: demo-$(date +%s%N)" -d "$ride")
    echo "$order"
    order_id=$(echo "$order" | sed -E 's/.*"id":"([^"]+)".*/\1/')
    say "Demo: matching assigns a driver in its next dispatch window"
    for _ in $(seq 1 50); do
        state=$(curl -s "$gateway/api/v1/rides/$order_id" -H "Authorization: Bearer $access" | sed -E 's/.*"state":"([a-z_]+)".*/\1/')
        [ "$state" = assigned ] && break
        sleep 0.2
    done
    echo "order $order_id is $state"
    say "Demo: the driver arrives, starts and completes the trip"
    for verb in arrive start complete; do
        curl -s -o /dev/null -w "$verb → %{http_code}\n" -X POST "$gateway/api/v1/driver/rides/$order_id/$verb" -H "Authorization: Bearer $driver"
    done
    say "Demo: the rider pays with the coupon (sandbox provider: no money moves)"
    payment=$(curl -s -X POST "$gateway/api/v1/payments" -H "Authorization: Bearer $access" -H 'Content-Type: application/json' \
        -H "Idempotency-Key: demo-pay-$(date +%s%N)" -d "{\"orderID\":\"$order_id\",\"couponID\":\"$coupon_id\"}")
    echo "$payment"
    sleep 0.5
    say "Demo: the rider's history, every transition in it (paid comes from the payment event)"
    curl -s "$gateway/api/v1/rides" -H "Authorization: Bearer $access"; echo
    say "Demo: the ledger (every payment's entries sum to zero)"
    curl -s "$gateway/api/v1/admin/ledger" -H "Authorization: Bearer $admin"; echo
    say "Demo: a settlement batch pays the driver, and the reconciliation report"
    curl -s -X POST "$gateway/api/v1/admin/settlements/run" -H "Authorization: Bearer $admin"; echo
    curl -s "$gateway/api/v1/admin/reconciliation" -H "Authorization: Bearer $admin"; echo
fi

say "Running. Metrics: $gateway/metrics  Readiness: $gateway/readyz  — Ctrl-C stops everything."
wait
