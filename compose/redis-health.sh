#!/bin/sh
# Healthy when Redis answers PING, signed in with its password when it has one.
password="${REDIS_PASSWORD:-}"
if [ -z "$password" ] && [ -n "${REDIS_PASSWORD_FILE:-}" ]; then
    password=$(cat "$REDIS_PASSWORD_FILE")
fi
REDISCLI_AUTH="$password" redis-cli ping | grep -q PONG
