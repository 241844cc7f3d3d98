#!/usr/bin/env bash
# What each layer of the flash-sale claim costs, measured with wrk (a C load tool that needs little CPU of
# its own) against a running local stack: CPU per request of each serving process, from /proc/PID/stat
# before and after each run, next to the requests per second wrk reached. Closed loop (each of wrk's
# connections waits for its answer), so these are capacities, not latencies under a schedule; the
# open-loop figures are hailstorm-load's. Installs wrk and nginx when missing.
#
#   LoadTests/http-floor.sh [--run-dir DIR] [--bin-dir DIR] [--seconds S] [--connections C] [--rounds N]
#
# Layers, each on its own:
#   bare          a Hummingbird route with nothing behind it (hailstorm-bare-endpoint)
#   gw-healthz    the gateway's /healthz: Hailstorm's full middleware stack, no token, no Redis, no hop
#   coupon        the claim sent straight to the coupon service: token check, one Lua script
#   gateway-claim the claim through the gateway: token check, rate limit (Lua), the hop to coupon
#   nginx-bare    Debian's nginx (one worker, keep-alive upstream) forwarding to the bare route
#   nginx-coupon  the same nginx forwarding the claim to the coupon service: the reference for the gateway
# After the rounds, the last round's figures are set against the goals: gateway claims/s >= 0.8 x nginx ->
# coupon, gateway CPU per claim <= 4 x nginx's, coupon CPU per claim <= 2.5 x the bare route's.
# The claims go to a campaign of one coupon that this script sells out first, so every claim runs the
# script and is refused (`sold-out`), as nearly all claims of a real sale are. Riders are 3,000 synthetic
# accounts signed with the run's key, as hailstorm-load's are; each repeats, so their tokens are checked
# once and then found in the verified-token cache (the cheapest case for the services).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

run_dir=".hailstorm/run"
seconds=8
connections=32
rounds=2
bin=""
while [ $# -gt 0 ]; do
    case "$1" in
        --run-dir) run_dir="$2"; shift 2 ;;
        --seconds) seconds="$2"; shift 2 ;;
        --connections) connections="$2"; shift 2 ;;
        --rounds) rounds="$2"; shift 2 ;;
        --bin-dir) bin="$2"; shift 2 ;;
        *) echo "http-floor: unknown option $1" >&2; exit 2 ;;
    esac
done

missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
[ -x /usr/sbin/nginx ] || missing+=(nginx)
install_packages "${missing[@]}"
[ -n "$bin" ] || bin="$(swift build -c release --show-bin-path)"
[ -x "$bin/hailstorm" ] && [ -x "$bin/hailstorm-bare-endpoint" ] || {
    echo "http-floor: build the release binaries first (swift build -c release)" >&2; exit 2; }
status="$("$bin/hailstorm" status --json --run-dir "$run_dir")" || {
    echo "http-floor: no running stack in $run_dir (start one with: hailstorm up --run-dir $run_dir)" >&2; exit 2; }

field() { # field SERVICE KEY: from `hailstorm status --json`, the first instance of SERVICE
    python3 -c 'import json,sys
d=json.load(sys.stdin); i=[i for i in d["instances"] if i["service"]==sys.argv[1]][0]; print(i[sys.argv[2]])' "$1" "$2" <<<"$status"
}
gateway="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["gateway"])' <<<"$status")"
gateway_pid=$(field gateway pid); coupon_pid=$(field coupon pid); coupon_port=$(field coupon port); redis_pid=$(field redis pid)

work="$(mktemp -d)"
bare_pid=""
nginx_pid=""
cleanup() {
    [ -n "$bare_pid" ] && kill "$bare_pid" 2>/dev/null
    [ -n "$nginx_pid" ] && kill "$nginx_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

# The admin signs in and opens a campaign of one coupon; synthetic riders' tokens are signed with the run's key.
admin_token="$(python3 - "$run_dir/admin.json" "$gateway" <<'PY'
import json, sys, urllib.request
admin = json.load(open(sys.argv[1]))
request = urllib.request.Request(sys.argv[2] + "/api/v1/auth/login", method="POST",
    data=json.dumps({"phone": admin["phone"], "password": admin["password"]}).encode(),
    headers={"Content-Type": "application/json"})
print(json.load(urllib.request.urlopen(request))["accessToken"])
PY
)"
campaign="$(python3 - "$gateway" "$admin_token" <<'PY'
import json, sys, time, urllib.request
now = time.time()
body = {"name": "http-floor", "city": "Berlin", "kind": "amount", "amountOffCents": 100, "minimumFareCents": 0,
        "stock": 1, "perUserLimit": 1, "startsAt": now - 1, "endsAt": now + 3600}
request = urllib.request.Request(sys.argv[1] + "/api/v1/admin/coupons/campaigns", method="POST",
    data=json.dumps(body).encode(), headers={"Content-Type": "application/json", "Authorization": "Bearer " + sys.argv[2]})
print(json.load(urllib.request.urlopen(request))["id"])
PY
)"
# 3,000 riders' tokens signed with the run's login key (as hailstorm-load signs its riders).
"$bin/hailstorm" token --run-dir "$run_dir" --role rider --count 3000 >"$work/tokens.tsv"
python3 - "$work/tokens.tsv" "$work/riders.lua" <<'PY'
import sys
tokens = [line.split("\t")[1].strip() for line in open(sys.argv[1]) if "\t" in line]
with open(sys.argv[2], "w") as out:
    out.write("tokens = {\n")
    for token in tokens:
        out.write('"%s",\n' % token)
    out.write("}\n")
    out.write('local i = 0\nrequest = function()\n  i = i + 1\n'
              '  return wrk.format("POST", nil, {["Authorization"] = "Bearer " .. tokens[(i % #tokens) + 1]})\nend\n')
PY
first_token="$(sed -n 2p "$work/riders.lua" | tr -d '",')"
curl -s -o /dev/null -X POST -H "Authorization: Bearer $first_token" "$gateway/api/v1/coupons/campaigns/$campaign/claim"

bare_port=$(free_port)
"$bin/hailstorm-bare-endpoint" "$bare_port" >/dev/null 2>&1 &
bare_pid=$!
wait_for_port "$bare_port" 20

# nginx as the trusted reverse proxy: one worker, keep-alive connections to each upstream, no access log.
nginx_port=$(free_port)
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    upstream bare { server 127.0.0.1:$bare_port; keepalive 64; }
    upstream coupon { server 127.0.0.1:$coupon_port; keepalive 64; }
    server {
        listen 127.0.0.1:$nginx_port;
        location /bare/ { proxy_pass http://bare/; proxy_http_version 1.1; proxy_set_header Connection ""; }
        location /coupon/ { proxy_pass http://coupon/; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
EOF
/usr/sbin/nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" &
nginx_pid=$!
wait_for_port "$nginx_port" 20
nginx_worker=""
for _ in $(seq 1 50); do
    nginx_worker="$(pgrep -P "$nginx_pid" | head -1 || true)"
    [ -n "$nginx_worker" ] && break
    sleep 0.1
done
[ -n "$nginx_worker" ] || { echo "http-floor: nginx started no worker; see $work/nginx/error.log" >&2; exit 1; }

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
measure() { # measure LABEL URL PID:NAME...
    local label="$1" url="$2"; shift 2
    local before=() target
    for target in "$@"; do before+=("$(ticks "${target%%:*}")"); done
    local out requests rate cost line i=0
    out="$(wrk -t1 -c"$connections" -d"${seconds}s" -s "$work/riders.lua" --latency "$url")"
    requests="$(grep -oP '^\s*\K[0-9]+(?= requests in)' <<<"$out")"
    rate="$(grep -oP 'Requests/sec:\s*\K[0-9.]+' <<<"$out")"
    echo "$label rate $rate" >>"$work/figures"
    line="$(printf '%-14s %8.0f req/s  p50 %-8s p99 %-8s' "$label" "$rate" \
        "$(grep -oP '^\s+50%\s+\K\S+' <<<"$out")" "$(grep -oP '^\s+99%\s+\K\S+' <<<"$out")")"
    for target in "$@"; do
        # Clock ticks are 10 ms: CPU µs per request = ticks × 10,000 / requests.
        cost=$(( ($(ticks "${target%%:*}") - ${before[$i]}) * 10000 / requests ))
        line="$line  ${target#*:} $cost µs"
        echo "$label ${target#*:} $cost" >>"$work/figures"
        i=$((i + 1))
    done
    echo "$line"
}

echo "http-floor: wrk -t1 -c$connections -d${seconds}s, CPU per request of each process (µs), campaign $campaign sold out"
for round in $(seq 1 "$rounds"); do
    echo "round $round"
    measure bare "http://127.0.0.1:$bare_port/api/v1/coupons/campaigns/x/claim" "$bare_pid:server"
    measure gw-healthz "$gateway/healthz" "$gateway_pid:gateway"
    measure coupon "http://127.0.0.1:$coupon_port/v1/campaigns/$campaign/claim" "$coupon_pid:coupon" "$redis_pid:redis"
    measure gateway-claim "$gateway/api/v1/coupons/campaigns/$campaign/claim" \
        "$gateway_pid:gateway" "$coupon_pid:coupon" "$redis_pid:redis"
    measure nginx-bare "http://127.0.0.1:$nginx_port/bare/api/v1/coupons/campaigns/x/claim" "$nginx_worker:nginx" "$bare_pid:server"
    measure nginx-coupon "http://127.0.0.1:$nginx_port/coupon/v1/campaigns/$campaign/claim" \
        "$nginx_worker:nginx" "$coupon_pid:coupon" "$redis_pid:redis"
done

# The goals, from the last round (a label's figures are the last ones written for it).
python3 - "$work/figures" <<'PY'
import sys
figures = {}
for line in open(sys.argv[1]):
    label, what, value = line.split()
    figures[(label, what)] = float(value)
def ratio(a, b):
    return a / b if b else float("inf")
goals = [
    ("gateway claims/s vs nginx -> coupon", ratio(figures[("gateway-claim", "rate")], figures[("nginx-coupon", "rate")]), ">=", 0.8),
    ("gateway CPU per claim vs nginx's", ratio(figures[("gateway-claim", "gateway")], figures[("nginx-coupon", "nginx")]), "<=", 4.0),
    ("coupon CPU per claim vs the bare route's", ratio(figures[("coupon", "coupon")], figures[("bare", "server")]), "<=", 2.5),
]
print("goals (last round):")
for name, value, sense, bound in goals:
    met = value >= bound if sense == ">=" else value <= bound
    print("  %-42s %5.2f  (goal %s %.1f)  %s" % (name, value, sense, bound, "met" if met else "not met"))
PY
