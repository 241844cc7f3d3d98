#!/usr/bin/env bash
# Runs Hailstorm's tests: installs what is missing (apt: redis-server, etcd-server, libhiredis-dev,
# libsqlite3-dev, prometheus, libjs-leaflet, libjs-chart.js; chromium and chromium-driver for the command
# centre's page), starts Redis and etcd on free loopback ports, builds and runs `swift test`, stops them;
# while the package compiles it checks the deployment files (scripts/check-manifests.sh: docker-compose,
# kubectl kustomize, kubernetes-validate, checkov), after the tests it runs the compose stack from freshly built images
# (scripts/compose-test.sh: podman, podman-compose, debootstrap) and plays the Kubernetes dev overlay's
# workloads with podman (scripts/kube-play-test.sh). Between the two, schemathesis fuzzes the public API
# from its OpenAPI document against a local run (scripts/fuzz.sh, 20 examples per operation and role),
# and the demo city runs on a local run over a six-node Redis Cluster with order in three shards, coupon
# and payment in two (scripts/cluster-demo.sh).
# Each installs what it needs. At the end it prints how long each stage took.
#
#   scripts/test.sh [--no-containers] [swift test arguments, e.g. --filter RedisKitTests]
#
# --no-containers skips the compose stack and kube play (they build the release binaries and every image).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

containers=1
if [ "${1:-}" = "--no-containers" ]; then
    containers=0
    shift
fi

# Per-stage times, printed at the end (and when a stage fails).
stage_names=()
stage_seconds=()
stage_started=$SECONDS
stage_name="install"
stage() {
    stage_names+=("$stage_name")
    stage_seconds+=($((SECONDS - stage_started)))
    stage_name=$1
    stage_started=$SECONDS
}
report_stages() {
    stage_names+=("$stage_name")
    stage_seconds+=($((SECONDS - stage_started)))
    say "Time per stage"
    for i in "${!stage_names[@]}"; do
        printf '  %-22s %4d s\n' "${stage_names[$i]}" "${stage_seconds[$i]}"
    done
    printf '  %-22s %4d s\n' "total" "$SECONDS"
}
trap report_stages EXIT

ensure_packages
# The command centre's page is tested as a person uses it: headless Chromium, driven through chromedriver.
command -v chromedriver >/dev/null 2>&1 || install_packages chromium chromium-driver
ensure_kubectl
# What the manifests' check would install with apt, installed here: it runs beside the image job's apt.
command -v docker-compose >/dev/null 2>&1 || install_packages docker-compose

run_dir=$(mktemp -d /tmp/hailstorm-test.XXXXXX)
images_pid=
manifests_pid=
cleanup() {
    # The background jobs and what they run (podman, debootstrap, pip, checkov), when the build failed
    # before they ended.
    for pid in $images_pid $manifests_pid; do
        pkill -TERM -P "$pid" 2>/dev/null || true
        kill "$pid" 2>/dev/null || true
    done
    stop_pidfile "$run_dir/redis.pid"
    stop_pidfile "$run_dir/etcd.pid"
    rm -rf "$run_dir"
}
trap 'cleanup; report_stages' EXIT

start_backends "$run_dir"

export HAILSTORM_TEST_REDIS_PORT=$redis_port
export HAILSTORM_TEST_ETCD_ENDPOINT="http://127.0.0.1:$etcd_port"

# One build for everything: the tests, the fuzzing run and the container images all use the release
# build (testable imports on), so the toolchain compiles the package once. Without debug information
# (-gnone, and -g0 for the C targets): nothing here reads it (the images strip it anyway; a crash's
# backtrace still names its functions from the symbol table), and writing it is build time.
stage "release build"
# The deployment files' check is a virtual environment's install and a few seconds of checkers, mostly
# waiting on the disk and the network: made beside the compiler too, its verdict read after the build.
say "Meanwhile: checking the compose files and the Kubernetes manifests (log in $run_dir/manifests.log)"
bash scripts/check-manifests.sh >"$run_dir/manifests.log" 2>&1 &
manifests_pid=$!
if [ "$containers" = 1 ]; then
    # What the container steps need that no Hailstorm binary is in (podman, the Debian base image from
    # debootstrap, the images of Redis, etcd and Prometheus, the services' shared layers) is mostly
    # downloads: made beside the compiler, which leaves the network idle. Done before the tests start.
    say "Meanwhile: podman, the base image and the images without Hailstorm binaries (log in $run_dir/images.log)"
    (source scripts/containers.sh && ensure_podman && ensure_base_image && build_base_images dev) \
        >"$run_dir/images.log" 2>&1 &
    images_pid=$!
fi
say "Building (release) the services, the tools and the tests"
release=(-c release -Xswiftc -enable-testing -Xswiftc -gnone -Xcc -g0)
swift build "${release[@]}" --build-tests
release_bin=$(swift build "${release[@]}" --show-bin-path)
say "The compose files and the Kubernetes manifests"
wait "$manifests_pid" || { status=$?; manifests_pid=; cat "$run_dir/manifests.log" >&2; exit "$status"; }
manifests_pid=
cat "$run_dir/manifests.log"
if [ -n "$images_pid" ]; then
    say "Waiting for the images without Hailstorm binaries"
    wait "$images_pid" || { status=$?; images_pid=; cat "$run_dir/images.log" >&2; exit "$status"; }
    images_pid=
fi
stage "tests"
say "Running the tests"
# One test at a time: the flash-sale storms saturate a small machine, and the tests that wait on real
# time (lease expiry, deadlines, rate-limit windows) must not share it with them.
swift test "${release[@]}" --skip-build --no-parallel "$@"
cleanup
trap report_stages EXIT

stage "fuzz (schemathesis)"
say "Fuzzing the public API from its OpenAPI document"
bash scripts/fuzz.sh --examples 20 --bin-dir "$release_bin"

stage "cluster demo"
say "The demo city on a six-node Redis Cluster, order in three shards, coupon and payment in two"
bash scripts/cluster-demo.sh --bin-dir "$release_bin"

if [ "$containers" = 1 ]; then
    stage "compose stack"
    say "Running the compose stack"
    export HAILSTORM_RELEASE_BIN=$release_bin
    bash scripts/compose-test.sh
    stage "kube play"
    say "Playing the Kubernetes dev overlay with podman"
    bash scripts/kube-play-test.sh
fi
