#!/bin/sh
# Starts etcd; with ETCD_ROOT_PASSWORD and ETCD_HAILSTORM_PASSWORD, the first start turns authentication
# on: a root user, and a `hailstorm` user whose role may read and write the services' prefix
# (ETCD_HAILSTORM_PREFIX, /hailstorm/) and nothing else. Later starts find it on already.
set -eu
etcd "$@" &
pid=$!
trap 'kill -TERM "$pid"; wait "$pid"; exit 0' TERM INT
endpoint=http://127.0.0.1:2379
until etcdctl --endpoints="$endpoint" --dial-timeout=1s endpoint health >/dev/null 2>&1 \
    || etcdctl --endpoints="$endpoint" --user "root:${ETCD_ROOT_PASSWORD:-}" endpoint health >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || exit 1
    sleep 0.5
done
if [ -n "${ETCD_ROOT_PASSWORD:-}" ] && [ -n "${ETCD_HAILSTORM_PASSWORD:-}" ] \
    && etcdctl --endpoints="$endpoint" user list >/dev/null 2>&1; then
    # Anonymous `user list` works only while authentication is off.
    prefix="${ETCD_HAILSTORM_PREFIX:-/hailstorm/}"
    e() { etcdctl --endpoints="$endpoint" "$@" >/dev/null; }
    e user add root --new-user-password="$ETCD_ROOT_PASSWORD" --interactive=false
    e role add hailstorm
    e role grant-permission hailstorm --prefix=true readwrite "$prefix"
    e user add hailstorm --new-user-password="$ETCD_HAILSTORM_PASSWORD" --interactive=false
    e user grant-role hailstorm hailstorm
    e auth enable
    echo "etcd: authentication on; user hailstorm may use $prefix"
fi
wait "$pid"
