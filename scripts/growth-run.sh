#!/usr/bin/env bash
# Bounded growth: a flash sale of many claims and a rush hour of many rides on a local run whose
# retention bounds are set low, then a check that every stream and every `processed_events` table is
# within its bound and that no consumer group lost an entry it had not read.
#
#   scripts/growth-run.sh [--claims 100000] [--rides 20000] [--bound 20000] [--claim-rate 800]
#                         [--ride-rate 50] [--bin-dir DIR]
#
# The bounds go to every service as `events.stream.max.length` and `events.processed.max.rows`, with
# `events.retention.interval.seconds` at 5. The rates default to what two cores carry without queueing
# (the audits fail when orders wait past their minute). Without --bin-dir it builds the release products.
# Exits 1 when a load audit fails, a stream or table is over its bound, or a group lost unread entries.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

claims=100000
rides=20000
bound=20000
rate=800
ride_rate=50
bin=""
while [ $# -gt 0 ]; do
    case "$1" in
        --claims) claims=$2; shift ;;
        --rides) rides=$2; shift ;;
        --bound) bound=$2; shift ;;
        --claim-rate) rate=$2; shift ;;
        --ride-rate) ride_rate=$2; shift ;;
        --bin-dir) bin=$2; shift ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

ensure_packages
if [ -z "$bin" ]; then
    say "Building Hailstorm (release)"
    swift build -c release
    bin=$(swift build -c release --show-bin-path)
fi

work=$(mktemp -d /tmp/hailstorm-growth.XXXXXX)
run_dir="$work/run"
port=$(free_port)
trap '"$bin/hailstorm" down --run-dir "$run_dir" >/dev/null 2>&1 || true' EXIT

options=()
for service in login order matching order-grab coupon payment settlement ad analytics command gateway; do
    options+=(--option "$service:events-stream-max-length=$bound"
        --option "$service:events-processed-max-rows=$bound"
        --option "$service:events-retention-interval-seconds=5")
done
say "Starting Hailstorm with streams and processed_events bounded at $bound"
"$bin/hailstorm" up --run-dir "$run_dir" --gateway-port "$port" "${options[@]}"

# A sale of $claims coupons: riders four times as many, picked at random, 1.25 × $claims presses, so that
# about 1.07 × $claims distinct riders press the button and the stock runs out near the end.
seconds=$(( claims * 5 / 4 / rate + 1 ))
say "Flash sale: $claims coupons, $((claims * 4)) riders, $rate claims/s for $seconds s"
# A failed load audit is reported at the end; the bounds are checked all the same.
audits=()
"$bin/hailstorm-load" flash-sale --run-dir "$run_dir" --coupons "$claims" --riders $((claims * 4)) \
    --rate "$rate" --duration "$seconds" --out "$work/flash-sale" || audits+=("flash sale")

ride_seconds=$(( rides / ride_rate + 1 ))
say "Rush hour: $rides rides at $ride_rate/s for $ride_seconds s"
"$bin/hailstorm-load" rush-hour --run-dir "$run_dir" --drivers 2000 --rate "$ride_rate" \
    --duration "$ride_seconds" --out "$work/rush-hour" || audits+=("rush hour")

say "Waiting for the consumers to drain and the retention work to run"
redis_port=$(python3 -c 'import json,sys; print(next(i["port"] for i in json.load(open(sys.argv[1]))["instances"] if i["service"] == "redis"))' "$run_dir/state.json")
bounds=passed
python3 - "$redis_port" "$run_dir/data" "$bound" <<'PY' || bounds=failed
import glob, os, socket, sqlite3, sys, time

port, data, bound = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])

def command(*args):
    """One Redis command over RESP, its reply as Python values."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"".join([b"*%d\r\n" % len(args)] + [b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in args]))
        f = s.makefile("rb")
        def read():
            line = f.readline()[:-2]
            kind, rest = line[:1], line[1:]
            if kind in (b"+",): return rest.decode()
            if kind == b"-": raise RuntimeError(rest.decode())
            if kind == b":": return int(rest)
            if kind == b"$":
                n = int(rest)
                if n < 0: return None
                value = f.read(n + 2)[:-2]
                return value.decode()
            if kind == b"*":
                n = int(rest)
                return None if n < 0 else [read() for _ in range(n)]
            raise RuntimeError("unexpected reply %r" % line)
        return read()

def pairs(values):
    return dict(zip(values[0::2], values[1::2]))

def stream_id(text):
    ms, _, seq = text.partition("-")
    return (int(ms), int(seq or 0))

streams = sorted(command("KEYS", "events:*") or [])
streams = [s for s in streams if command("TYPE", s) == "stream"]

# Drained: every group has read everything and acknowledged it (at most five minutes).
deadline = time.time() + 300
while True:
    behind = []
    for key in streams:
        for group in map(pairs, command("XINFO", "GROUPS", key) or []):
            if group["pending"] or group.get("lag"):
                behind.append("%s/%s: %s pending, lag %s" % (key, group["name"], group["pending"], group.get("lag")))
    if not behind or time.time() > deadline:
        break
    time.sleep(2)
# Then two rounds of the retention work (every 5 s).
time.sleep(12)

failures = []
print("%-28s %10s %10s %12s" % ("stream", "added", "length", "bound"))
for key in streams:
    info = pairs(command("XINFO", "STREAM", key))
    length, added = info["length"], info.get("entries-added")
    print("%-28s %10s %10d %12d" % (key, added, length, bound))
    if length > bound:
        failures.append("%s holds %d entries, over its bound of %d" % (key, length, bound))
    deleted = stream_id(info.get("max-deleted-entry-id") or "0-0")
    for group in map(pairs, command("XINFO", "GROUPS", key) or []):
        delivered = stream_id(group["last-delivered-id"])
        # An entry trimmed past what a group had been given is an entry that group never read.
        if deleted > delivered:
            failures.append("%s: group %s was given up to %s but entries up to %s were trimmed"
                            % (key, group["name"], group["last-delivered-id"], info["max-deleted-entry-id"]))
        if group["pending"] or group.get("lag"):
            failures.append("%s: group %s still has %s pending and a lag of %s"
                            % (key, group["name"], group["pending"], group.get("lag")))
        print("    group %-22s read %s, pending %s, lag %s" % (group["name"], group.get("entries-read"), group["pending"], group.get("lag")))

print("%-28s %10s %12s" % ("processed_events", "rows", "bound"))
# One folder per instance under data/, each with its service's SQLite file.
consumers = 0
for path in sorted(glob.glob(os.path.join(data, "*", "*.sqlite"))):
    db = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        rows = db.execute("SELECT count(*) FROM processed_events").fetchone()[0]
    except sqlite3.OperationalError:
        continue
    db.close()
    consumers += 1
    name = os.path.relpath(path, data)
    print("%-28s %10d %12d" % (name, rows, bound))
    if rows > bound:
        failures.append("%s: processed_events holds %d rows, over its bound of %d" % (name, rows, bound))
if consumers == 0:
    failures.append("no SQLite file with a processed_events table under %s" % data)

for failure in failures:
    print("FAILED: " + failure)
sys.exit(1 if failures else 0)
PY
if [ "$bounds" = passed ]; then
    say "Every stream and processed_events table within $bound, no unread entry trimmed"
else
    say "Bounds check FAILED (above)"
fi
[ ${#audits[@]} -eq 0 ] || say "Load audits that failed: ${audits[*]} (reports in $work)"
[ "$bounds" = passed ] && [ ${#audits[@]} -eq 0 ]
