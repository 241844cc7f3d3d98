#!/usr/bin/env bash
# `hailstorm up` / `hailstorm down`, again and again, while another process opens and closes thousands
# of loopback connections (each takes a port from the kernel's ephemeral range, where a port guessed
# for a service could be taken before the service binds it). Every `up` must be ready within 60 s.
#
#   scripts/up-down-cycles.sh [--cycles 30] [--bin-dir DIR] [--debug]
#
# Without --bin-dir it builds (release, or debug with --debug) first. Prints one line per cycle and a
# summary; exits 1 when an `up` failed or took longer than 60 s.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

cycles=30
bin=""
configuration=release
while [ $# -gt 0 ]; do
    case "$1" in
        --cycles) cycles=$2; shift ;;
        --bin-dir) bin=$2; shift ;;
        --debug) configuration=debug ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

ensure_packages
if [ -z "$bin" ]; then
    say "Building Hailstorm ($configuration)"
    swift build -c "$configuration"
    bin=$(swift build -c "$configuration" --show-bin-path)
fi
extra=()
[ "$configuration" = debug ] && extra=(--option login:auth-bcrypt-cost=6)

work=$(mktemp -d /tmp/hailstorm-cycles.XXXXXX)
run_dir="$work/run"
port=$(free_port)

# The churn: a listener and a client on loopback, 500 connections opened and closed at a time, for as
# long as the cycles take (at most two hours); each closed connection leaves its ephemeral port in
# TIME_WAIT, so the kernel keeps handing out new ones.
python3 - "$work/churn.count" <<'PY' &
import socket, sys, threading, time
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(4096)
port = listener.getsockname()[1]
def accept():
    while True:
        connection, _ = listener.accept()
        connection.close()
threading.Thread(target=accept, daemon=True).start()
opened = 0
end = time.time() + 7200
while time.time() < end:
    batch = []
    for _ in range(500):
        try:
            batch.append(socket.create_connection(("127.0.0.1", port), timeout=2))
        except OSError:
            pass
    for connection in batch:
        connection.close()
    opened += len(batch)
    with open(sys.argv[1], "w") as f:
        f.write(str(opened))
    time.sleep(0.05)
PY
churn=$!
cleanup() {
    kill "$churn" 2>/dev/null || true
    "$bin/hailstorm" down --run-dir "$run_dir" >/dev/null 2>&1 || true
}
trap cleanup EXIT

failures=0
slowest=0
total=0
for cycle in $(seq 1 "$cycles"); do
    started=$(date +%s.%N)
    if "$bin/hailstorm" up --run-dir "$run_dir" --gateway-port "$port" --timeout 60 "${extra[@]}" >"$work/up.log" 2>&1; then
        outcome=ready
    else
        outcome=FAILED
        failures=$((failures + 1))
        tail -5 "$work/up.log" >&2
    fi
    seconds=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
    "$bin/hailstorm" down --run-dir "$run_dir" >/dev/null 2>&1 || true
    total=$(awk -v a="$total" -v b="$seconds" 'BEGIN { printf "%.2f", a + b }')
    slowest=$(awk -v a="$slowest" -v b="$seconds" 'BEGIN { printf "%.2f", (b > a ? b : a) }')
    printf 'cycle %2d: %s in %.1f s (loopback connections opened so far: %s)\n' "$cycle" "$outcome" "$seconds" "$(cat "$work/churn.count" 2>/dev/null || echo 0)"
done
printf '%d cycles: %d failed; up took %.1f s on average, %.1f s at most\n' "$cycles" "$failures" \
    "$(awk -v a="$total" -v n="$cycles" 'BEGIN { printf "%.2f", a / n }')" "$slowest"
[ "$failures" = 0 ] && awk -v a="$slowest" 'BEGIN { exit !(a <= 60) }'
