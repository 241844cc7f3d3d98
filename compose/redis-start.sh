#!/bin/sh
# Starts redis-server. With a password (REDIS_PASSWORD, or the file named by REDIS_PASSWORD_FILE, as
# Kubernetes mounts a Secret) every client must AUTH first; the password goes into a config file under
# /tmp, not onto the command line where `ps` would show it.
set -eu
password="${REDIS_PASSWORD:-}"
if [ -z "$password" ] && [ -n "${REDIS_PASSWORD_FILE:-}" ]; then
    password=$(cat "$REDIS_PASSWORD_FILE")
fi
if [ -n "$password" ]; then
    umask 077
    # masterauth: a replica of a Redis Cluster signs in to its master with the same password.
    printf 'requirepass "%s"\nmasterauth "%s"\n' "$password" "$password" >/tmp/redis-auth.conf
    exec redis-server /tmp/redis-auth.conf "$@"
fi
exec redis-server "$@"
