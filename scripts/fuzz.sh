#!/usr/bin/env bash
# Fuzzes the public API from its own description: starts a local Hailstorm (`hailstorm up` in a
# throwaway run folder, on loopback), signs in a rider, a driver and the admin, and runs schemathesis
# (PyPI, installed into .build-fuzz/venv) over every operation of GET /api/v1/openapi.json once per
# role. Checks: no server error, status codes, content types and bodies as documented. Exit 0 only when
# schemathesis finds nothing.
#
#   scripts/fuzz.sh [--examples N] [--bin-dir DIR] [--seed S]
#
# The test command runs it with 20 examples per operation against the debug build; a longer hunt:
#   scripts/fuzz.sh --examples 500 --bin-dir .build/release
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

examples=20
bin_dir=.build/debug
seed=$RANDOM
while [ $# -gt 0 ]; do
    case "$1" in
        --examples) examples=$2; shift 2 ;;
        --bin-dir) bin_dir=$2; shift 2 ;;
        --seed) seed=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

venv=.build-fuzz/venv
if [ ! -x "$venv/bin/schemathesis" ]; then
    say "Installing schemathesis into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "schemathesis==4.32.5"
fi
[ -x "$bin_dir/hailstorm" ] || { echo "no hailstorm in $bin_dir: build first (swift build)" >&2; exit 2; }

throwaway_run fuzz

say "Starting Hailstorm for the fuzzer (gateway on 127.0.0.1:$port, $bin_dir)"
# Limits high enough that the fuzzer is measured, not throttled (throttling answers are documented too).
"$bin_dir/hailstorm" up --run-dir "$run_dir" --gateway-port "$port" --bin-dir "$bin_dir" --no-prometheus \
    --option login:auth-bcrypt-cost=4 --option gateway:gateway-rate-limit=100000 \
    --option gateway:gateway-rate-auth-limit=100000 --option gateway:gateway-signin-failures=100000 \
    --option login:auth-signin-failures=100000 >"$run_dir/up.log" 2>&1 || { cat "$run_dir/up.log" >&2; exit 1; }
base="http://127.0.0.1:$port"

# Signs in (signing up first for riders and drivers); prints the access token.
token() {
    local role=$1 phone=$2 password=$3
    if [ "$role" != admin ]; then
        curl -fsS -o /dev/null -H 'Content-Type: application/json' \
            -d "{\"role\":\"$role\",\"phone\":\"$phone\",\"password\":\"$password\",\"name\":\"Fuzz $role\"}" "$base/api/v1/auth/signup"
    fi
    curl -fsS -H 'Content-Type: application/json' -d "{\"phone\":\"$phone\",\"password\":\"$password\"}" "$base/api/v1/auth/login" \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["accessToken"])'
}
admin_phone=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["phone"])' "$run_dir/admin.json")
admin_password=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["password"])' "$run_dir/admin.json")

checks=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
failed=0
fuzz() {
    local label=$1 token=$2
    shift 2
    say "schemathesis as $label: $examples examples per operation (seed $seed)"
    if ! "$venv/bin/schemathesis" run "$base/api/v1/openapi.json" --checks "$checks" \
        -H "Authorization: Bearer $token" --max-examples "$examples" --seed "$seed" --workers 1 \
        --generation-database none --no-color --report junit --report-dir "$run_dir/report-$label" "$@"; then
        failed=1
    fi
}
# Signing out would end the session the rest of the run uses: it is fuzzed last, with a session of its own.
for role in rider driver admin; do
    if [ "$role" = admin ]; then
        access=$(token admin "$admin_phone" "$admin_password")
    else
        access=$(token "$role" "+4915$(printf '%09d' $((RANDOM * 32768 + RANDOM)))" "fuzz-pass-word")
    fi
    fuzz "$role" "$access" --exclude-path /api/v1/auth/logout
done
fuzz "signing-out rider" "$(token rider "+4916$(printf '%09d' $((RANDOM * 32768 + RANDOM)))" "fuzz-pass-word")" \
    --include-path /api/v1/auth/logout
[ "$failed" = 0 ] && say "schemathesis found nothing"
exit $failed
