#!/usr/bin/env bash
# Checks the deployment files without a cluster: the compose files with docker-compose's `config`,
# the kustomize overlays rendered with kubectl, each render against the Kubernetes schemas
# (kubernetes-validate --strict) and against checkov's policies, where the only failures allowed are
# the ones docs/deploy.md lists with a reason for that overlay; Prometheus's rules with promtool (their
# syntax and their unit tests) and its two configurations with promtool. Renders land in
# .build-containers/manifests/. Installs docker-compose (apt) and the Python checkers (in a virtual
# environment under .build-containers/) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

out=.build-containers/manifests
venv=.build-containers/venv
mkdir -p "$out"

command -v docker-compose >/dev/null 2>&1 || install_packages docker-compose
ensure_kubectl
if [ ! -x "$venv/bin/checkov" ] || [ ! -x "$venv/bin/kubernetes-validate" ]; then
    say "Installing kubernetes-validate and checkov into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check kubernetes-validate checkov
fi

say "Compose files (docker-compose config)"
# Placeholders for every value compose requires: enough for `config`, not to run.
check_env=(HAILSTORM_JWKS=check HAILSTORM_REDIS_PASSWORD=check HAILSTORM_ETCD_ROOT_PASSWORD=check
    HAILSTORM_ETCD_PASSWORD=check HAILSTORM_ADMIN_PASSWORD=check HAILSTORM_AD_TOKEN_KEY=check)
for service in login order order_grab matching coupon payment settlement ad analytics command gateway; do
    check_env+=("HAILSTORM_${service^^}_SIGNING_KEY=check")
done
env "${check_env[@]}" docker-compose -f compose/docker-compose.yml config -q
env "${check_env[@]}" docker-compose -f compose/docker-compose.yml -f compose/docker-compose.replicas.yml config -q
env "${check_env[@]}" docker-compose -f compose/docker-compose.yml -f compose/docker-compose.redis-cluster.yml config -q
env "${check_env[@]}" docker-compose -f compose/docker-compose.yml -f compose/docker-compose.redis-cluster.yml \
    -f compose/docker-compose.shards.yml config -q

# The dev overlay generates its Secret from secrets.env and its JWKS from jwks.json, which are not
# committed: make placeholders for the check (kube-play-test.sh puts real keys in).
random_hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }
if [ ! -f k8s/overlays/dev/secrets.env ]; then
    {
        echo "# placeholder keys: scripts/kube-play-test.sh replaces them with real ones"
        echo "admin-password=$(random_hex 12)"
        echo "redis-password=$(random_hex 24)"
        for service in login order matching order-grab coupon payment settlement ad analytics command gateway; do
            echo "$service-signing-key=placeholder"
        done
        echo "ad-token-key=placeholder-placeholder-placeholder-0"
    } >k8s/overlays/dev/secrets.env
fi
[ -f k8s/overlays/dev/jwks.json ] || echo '{"keys":[]}' >k8s/overlays/dev/jwks.json

say "Prometheus rules (promtool: syntax, then the rules' own tests)"
command -v promtool >/dev/null 2>&1 || install_packages prometheus
promtool check rules k8s/components/prometheus/hailstorm-rules.yml
(cd k8s/components/prometheus && promtool test rules hailstorm-rules.test.yml)
say "Prometheus configurations (promtool check config: compose's and Kubernetes')"
for config in compose/prometheus.yml k8s/components/prometheus/prometheus-k8s.yml; do
    # The rules sit at /etc/hailstorm in the image: pointed at the repository's copy for the check.
    sed "s|/etc/hailstorm/hailstorm-rules.yml|$(pwd)/k8s/components/prometheus/hailstorm-rules.yml|" "$config" >"$out/$(basename "$config")"
    promtool check config "$out/$(basename "$config")" >/dev/null || { echo "promtool: $config is not a valid configuration" >&2; exit 1; }
    echo "  $config: valid"
done

failed=0
for overlay in dev prod; do
    say "Overlay $overlay: render, schemas, policies"
    kubectl kustomize "k8s/overlays/$overlay" >"$out/$overlay.yaml"
    "$venv/bin/kubernetes-validate" --strict --quiet "$out/$overlay.yaml"
    # The checks docs/deploy.md accepts for this overlay: rows `| CKV_… | dev, prod | reason |`.
    accepted=$(awk -F'|' -v overlay="$overlay" '$3 ~ overlay && match($2, /CKV_[A-Z0-9_]+/) { print substr($2, RSTART, RLENGTH) }' docs/deploy.md | paste -sd, -)
    rm -rf "$out/$overlay-checkov" && mkdir -p "$out/$overlay-checkov"
    cp "$out/$overlay.yaml" "$out/$overlay-checkov/"
    if ! "$venv/bin/checkov" -d "$out/$overlay-checkov" --framework kubernetes --quiet --compact \
        ${accepted:+--skip-check "$accepted"} >"$out/$overlay-checkov.txt" 2>&1; then
        cat "$out/$overlay-checkov.txt"
        echo "checkov: failed checks in the $overlay overlay beyond the ones docs/deploy.md accepts ($accepted)" >&2
        failed=1
    else
        echo "  checkov: $(grep -o 'Passed checks: [0-9]*, Failed checks: [0-9]*, Skipped checks: [0-9]*' "$out/$overlay-checkov.txt" || echo passed) (accepted: ${accepted:-none})"
    fi
done
exit $failed
