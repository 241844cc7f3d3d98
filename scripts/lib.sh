# Shared by Hailstorm's scripts: installing what is missing, free ports, starting Redis and etcd.

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

# Installs the named Debian/Ubuntu packages with apt-get (through sudo when not root); no names, no-op.
install_packages() {
    [ $# -gt 0 ] || return 0
    say "Installing missing packages: $*"
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

# Installs the Debian/Ubuntu packages Hailstorm needs when something is missing.
ensure_packages() {
    local missing=()
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
    command -v redis-benchmark >/dev/null 2>&1 || missing+=(redis-tools)
    command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
    command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
    [ -f /usr/include/hiredis/hiredis.h ] || missing+=(libhiredis-dev)
    [ -f /usr/include/sqlite3.h ] || missing+=(libsqlite3-dev)
    command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    # The ad service counts hours, days and daily budgets in each city's time zone.
    [ -d /usr/share/zoneinfo ] || missing+=(tzdata)
    # `hailstorm up` runs Prometheus beside the services, scraping every instance (promtool checks its rules).
    command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
    # The command centre's page serves Debian's Leaflet and Chart.js (no CDN).
    [ -f /usr/share/javascript/leaflet/leaflet.js ] || missing+=(libjs-leaflet)
    [ -f /usr/share/javascript/chart.js/chart.min.js ] || missing+=(libjs-chart.js)
    install_packages "${missing[@]}"
    # Debian's packages start system services; Hailstorm runs its own on free ports instead.
    if command -v swift >/dev/null 2>&1; then :; else
        echo "swift is not on PATH: install the Swift 6 toolchain from swift.org first" >&2
        exit 1
    fi
}

# kubectl renders the kustomize overlays (offline: `kubectl kustomize`). Debian 12 has no package for it;
# Ubuntu's snap and the Kubernetes apt repository do.
ensure_kubectl() {
    command -v kubectl >/dev/null 2>&1 && return 0
    install_packages kubectl 2>/dev/null || install_packages kubernetes-client 2>/dev/null || true
    command -v kubectl >/dev/null 2>&1 && return 0
    echo "kubectl is needed to render k8s/ (kubectl kustomize): install it from https://kubernetes.io/docs/tasks/tools/" >&2
    exit 1
}

# Prints a TCP port on 127.0.0.1 that nothing listens on, below the kernel's ephemeral range
# (net.ipv4.ip_local_port_range) so that no outgoing connection can take it before the server binds it.
free_port() {
    local port low=32768
    read -r low _ < /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
    [ "$low" -gt 11000 ] || low=32768
    for _ in $(seq 1 200); do
        port=$(( (RANDOM << 1 | RANDOM & 1) % (low - 10000) + 10000 ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    echo "no free port found" >&2
    return 1
}

# wait_for_port PORT SECONDS
wait_for_port() {
    for _ in $(seq 1 $(( $2 * 10 ))); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    return 1
}

# start_redis DIR PORT → redis-server in the background, pid in DIR/redis.pid
start_redis() {
    mkdir -p "$1"
    redis-server --port "$2" --bind 127.0.0.1 --save "" --appendonly no --dir "$1" \
        --daemonize no --logfile "$1/redis.log" &
    echo $! >"$1/redis.pid"
    wait_for_port "$2" 10 || { echo "redis-server did not start; see $1/redis.log" >&2; return 1; }
}

# start_etcd DIR CLIENT_PORT PEER_PORT → etcd in the background, pid in DIR/etcd.pid
start_etcd() {
    # The registry only holds the instances of this run: registrations a previous run left behind would
    # come back with their leases renewed and send callers to ports nobody listens on.
    rm -rf "$1/etcd-data"
    mkdir -p "$1"
    ETCD_UNSUPPORTED_ARCH="${ETCD_UNSUPPORTED_ARCH:-}" etcd --name hailstorm --data-dir "$1/etcd-data" \
        --listen-client-urls "http://127.0.0.1:$2" --advertise-client-urls "http://127.0.0.1:$2" \
        --listen-peer-urls "http://127.0.0.1:$3" --initial-advertise-peer-urls "http://127.0.0.1:$3" \
        --initial-cluster "hailstorm=http://127.0.0.1:$3" >"$1/etcd.log" 2>&1 &
    echo $! >"$1/etcd.pid"
    for _ in $(seq 1 100); do
        if curl -fs "http://127.0.0.1:$2/health" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "etcd did not start; see $1/etcd.log" >&2
    return 1
}

stop_pidfile() {
    [ -f "$1" ] || return 0
    local pid
    pid=$(cat "$1")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$1"
}

# start_backends DIR → Redis and etcd on free loopback ports; sets redis_port and etcd_port.
start_backends() {
    redis_port=$(free_port)
    etcd_port=$(free_port)
    local peer_port
    peer_port=$(free_port)
    say "Starting redis-server on 127.0.0.1:$redis_port and etcd on 127.0.0.1:$etcd_port (data in $1)"
    start_redis "$1" "$redis_port"
    start_etcd "$1" "$etcd_port" "$peer_port"
}

# throwaway_run NAME → a run folder of its own (sets run_dir) and a free gateway port (sets port) for a
# script that checks something against a local run of "$bin_dir/hailstorm"; when the script exits the
# run is stopped and its folder removed, after the services' last errors when the script failed.
throwaway_run() {
    run_dir=$(mktemp -d "/tmp/hailstorm-$1.XXXXXX")
    port=$(free_port)
    trap stop_throwaway_run EXIT
}

stop_throwaway_run() {
    local status=$?
    "$bin_dir/hailstorm" down --run-dir "$run_dir" >/dev/null 2>&1 || true
    if [ "$status" -ne 0 ]; then
        for log in "$run_dir"/logs/*.log; do
            grep -h '"level":"error"' "$log" 2>/dev/null | tail -5 || true
        done
    fi
    rm -rf "$run_dir"
    exit "$status"
}
