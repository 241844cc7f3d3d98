#!/usr/bin/env bash
# Starts the dev overlay's workloads with `podman kube play`, from the images compose-test.sh built
# (hailstorm/NAME:dev), and waits until every service in them answers its readiness check.
#
# podman is not Kubernetes: it plays Deployments, Pods, ConfigMaps, Secrets and PersistentVolumeClaims,
# but knows no StatefulSet and ignores Services, HPAs, PodDisruptionBudgets, NetworkPolicies, Ingresses,
# CronJobs, and it publishes container ports on the host and runs probes only through systemd. So each
# StatefulSet is played as a Pod named after it (where the cluster's Service would give that name in DNS)
# with a PersistentVolumeClaim per claim template, Deployments are played as they are, and the played copy
# leaves out ports and probes. What this shows: the images run under the manifests' pod and container settings (uid 10001,
# read-only root, dropped capabilities, the ConfigMap in the environment and the Secret as files, a volume on /data)
# and the services find Redis and each other by name. See docs/deploy.md for what it does not show.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
source scripts/containers.sh

ensure_podman
# Real token keys for the dev overlay (check-manifests.sh makes placeholders, enough to render only):
# every service's private key in secrets.env, their public keys in jwks.json.
dev=k8s/overlays/dev
# A secrets.env without the signing keys (a run stopped between writing the passwords and making the keys)
# is made again too.
if [ ! -f "$dev/secrets.env" ] || grep -q '^# placeholder keys' "$dev/secrets.env" \
    || ! grep -q '^gateway-signing-key=' "$dev/secrets.env"; then
    say "Making token keys for the dev overlay"
    random_hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }
    printf 'admin-password=%s\nredis-password=%s\n' "$(random_hex 12)" "$(random_hex 24)" >"$dev/secrets.env"
    rm -rf "$dev/keys"
    # The `hailstorm` tool of the release build the images came from (built here when it is missing).
    if [ -n "${HAILSTORM_RELEASE_BIN:-}" ]; then
        release_bin=$HAILSTORM_RELEASE_BIN
    else
        release_bin=$(swift build -c release --static-swift-stdlib --scratch-path .build-static --show-bin-path)
        [ -x "$release_bin/hailstorm" ] || swift build -c release --static-swift-stdlib --scratch-path .build-static --product hailstorm
    fi
    "$release_bin/hailstorm" keys --out "$dev/keys" --kustomize "$dev" >/dev/null
fi
bash scripts/check-manifests.sh >/dev/null   # renders .build-containers/manifests/dev.yaml
venv=.build-containers/venv
played=.build-containers/manifests/dev-podman.yaml

secrets_dir=.build-containers/manifests/dev-secrets
rm -rf "$secrets_dir" && mkdir -p "$secrets_dir"
"$venv/bin/python" - .build-containers/manifests/dev.yaml "$played" "$secrets_dir" <<'PY'
import base64, json, sys, yaml
objects = [o for o in yaml.safe_load_all(open(sys.argv[1])) if o]
out = []
for o in objects:
    kind = o["kind"]
    if kind in ("ConfigMap", "Deployment"):
        out.append(o)
    elif kind == "Secret":
        # podman 4.3 reads a Secret volume from its own secret store (a Secret inside the played file is
        # stored in a form its volume code cannot read), writes each key of `data` as it is stored,
        # without base64-decoding it, and ignores `items`. So each workload gets a Secret of its own in the
        # store (created below with `podman secret create`) holding the files the kubelet would write for
        # it: each of its items under its path, the value decoded. (One Secret for all would not do: every
        # service mounts its own <service>-signing-key at the same path.)
        data = {key: base64.b64decode(value).decode() for key, value in o.get("data", {}).items()}
        for other in objects:
            if other["kind"] not in ("StatefulSet", "Deployment"):
                continue
            for volume in other["spec"]["template"]["spec"].get("volumes", []):
                source = volume.get("secret", {})
                if source.get("secretName") != o["metadata"]["name"]:
                    continue
                name = f"{o['metadata']['name']}-{other['metadata']['name']}"
                items = source.get("items") or [{"key": key, "path": key} for key in data]
                files = {item["path"]: data[item["key"]] for item in items if item["key"] in data}
                with open(f"{sys.argv[3]}/{name}", "w") as secret:
                    json.dump({**o, "metadata": {**o["metadata"], "name": name}, "data": files}, secret)
                source["secretName"] = name
    elif kind == "StatefulSet":
        name = o["metadata"]["name"]
        template = o["spec"]["template"]
        spec = dict(template["spec"])
        volumes = list(spec.get("volumes", []))
        for claim in o["spec"].get("volumeClaimTemplates", []):
            claim_name = f"{claim['metadata']['name']}-{name}"
            out.append({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                        "metadata": {"name": claim_name}, "spec": claim["spec"]})
            volumes.append({"name": claim["metadata"]["name"], "persistentVolumeClaim": {"claimName": claim_name}})
        spec["volumes"] = volumes
        out.append({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "labels": template["metadata"].get("labels", {})}, "spec": spec})
# podman 4.3 publishes every containerPort on the host (nine pods cannot all have 8080) and turns probes
# into health checks that it schedules with systemd timers: the played copy has neither. Readiness is
# checked below by running each image's health check, which asks the same /readyz.
for o in out:
    if o["kind"] in ("Pod", "Deployment"):
        spec = o["spec"] if o["kind"] == "Pod" else o["spec"]["template"]["spec"]
        for container in spec["containers"]:
            for key in ("ports", "startupProbe", "livenessProbe", "readinessProbe"):
                container.pop(key, None)
        # podman 4.3 dereferences `optional` of a Secret volume without checking it is there.
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                volume["secret"].setdefault("optional", False)
yaml.safe_dump_all(out, open(sys.argv[2], "w"), sort_keys=False)
PY

# Every container of the played pods, but the pods' own infra containers.
workload_containers() { podman ps -a --filter label=app.kubernetes.io/part-of=hailstorm --format '{{.Names}}'; }

network="hailstorm-kube-$$"
podman network create "$network" >/dev/null
for secret in "$secrets_dir"/*; do
    podman secret rm "$(basename "$secret")" >/dev/null 2>&1 || true
    podman volume rm -f "$(basename "$secret")" >/dev/null 2>&1 || true
    podman secret create "$(basename "$secret")" "$secret" >/dev/null
done
finish() {
    local status=$?
    if [ "$status" -ne 0 ]; then
        for container in $(workload_containers); do
            echo "--- $container"; podman logs --tail 10 "$container" 2>&1 || true
        done
    fi
    podman kube down "$played" >/dev/null 2>&1 || true
    podman volume ls -q | grep -E -- '^data-' | xargs -r podman volume rm -f >/dev/null 2>&1 || true
    podman network rm -f "$network" >/dev/null 2>&1 || true
    # podman keeps a Secret volume's files in a volume named after the Secret.
    for secret in "$secrets_dir"/*; do
        podman secret rm "$(basename "$secret")" >/dev/null 2>&1 || true
        podman volume rm -f "$(basename "$secret")" >/dev/null 2>&1 || true
    done
    rm -rf "$secrets_dir"
    exit "$status"
}
trap finish EXIT

say "podman kube play of the dev overlay's workloads ($(grep -c '^kind: \(Pod\|Deployment\)$' "$played") pods)"
podman kube play --network "$network" "$played" >/dev/null

deadline=$((SECONDS + 180))
while :; do
    waiting=()
    for container in $(workload_containers); do
        [ "$(podman inspect -f '{{.State.Running}}' "$container")" = true ] || { waiting+=("$container (not running)"); continue; }
        # Redis has no HTTP endpoint; its pod is ready when it answers PING. Prometheus's image asks its /-/ready.
        if podman exec "$container" test -x /usr/local/bin/hailstorm-healthcheck 2>/dev/null; then
            podman exec "$container" /usr/local/bin/hailstorm-healthcheck >/dev/null 2>&1 || waiting+=("$container (not ready)")
        elif podman exec "$container" test -x /usr/local/bin/prometheus-health 2>/dev/null; then
            podman exec "$container" prometheus-health >/dev/null 2>&1 || waiting+=("$container (Prometheus not ready)")
        else
            podman exec "$container" redis-health >/dev/null 2>&1 || waiting+=("$container (no PONG)")
        fi
    done
    count=$(workload_containers | wc -l)
    if [ ${#waiting[@]} -eq 0 ] && [ "$count" -gt 0 ]; then break; fi
    if [ $SECONDS -ge $deadline ]; then echo "not ready after 180 s: ${waiting[*]}" >&2; exit 1; fi
    sleep 3
done
say "All $count containers of the dev overlay's workloads running and ready under podman kube play"
podman ps --filter label=app.kubernetes.io/part-of=hailstorm --format '  {{.Names}}\t{{.Status}}'
for container in $(workload_containers); do
    printf '  %-28s uid %s, read-only root %s\n' "$container" "$(podman exec "$container" id -u)" \
        "$(podman inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$container")"
done

# Through the gateway, as a client would: the admin signs in, which the gateway forwards to login by its
# name (the static discovery a cluster's DNS serves).
password=$(sed -n 's/^admin-password=//p' k8s/overlays/dev/secrets.env)
phone=$(sed -n 's/^ *AUTH_ADMIN_PHONE: *//p' "$played" | tr -d "'\"" | head -1)
gateway=$(workload_containers | grep -- '-gateway$' | head -1)
answer=$(podman exec -e PHONE="$phone" -e PASSWORD="$password" "$gateway" bash -c '
    body="{\"phone\":\"$PHONE\",\"password\":\"$PASSWORD\"}"
    exec 3<>/dev/tcp/127.0.0.1/8080
    printf "POST /api/v1/auth/login HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" "${#body}" "$body" >&3
    head -1 <&3')
echo "  admin sign-in through the gateway: ${answer%$'\r'}"
case "$answer" in
    *" 200 "*) ;;
    *) echo "the admin could not sign in through the gateway" >&2; exit 1 ;;
esac

# Prometheus finds the services by the names their pods answer to and scrapes them (the gateway's
# replicas it looks up as gateway-pods, a name only a cluster's DNS gives: not here).
prometheus=$(workload_containers | grep -- '-prometheus$' | head -1)
expected="ad analytics command coupon login matching order order-grab payment settlement"
scraped=""
for _ in $(seq 1 20); do
    targets=$(podman exec "$prometheus" bash -c '
        exec 3<>/dev/tcp/127.0.0.1/9090
        printf "GET /api/v1/targets?state=active HTTP/1.1\r\nHost: prometheus\r\nConnection: close\r\n\r\n" >&3
        cat <&3')
    scraped=$(printf '%s' "$targets" | grep -o '"job":"[a-z-]*"' | cut -d'"' -f4 | sort -u | paste -sd' ' -)
    up=$(printf '%s' "$targets" | grep -o '"health":"up"' | wc -l)
    [ "$scraped" = "$expected" ] && [ "$up" -ge 10 ] && break
    sleep 3
done
echo "  Prometheus scrapes: $scraped ($up targets up)"
[ "$scraped" = "$expected" ] && [ "$up" -ge 10 ] || { echo "Prometheus does not scrape every service (expected $expected)" >&2; exit 1; }
say "kube play check passed"
