#!/bin/bash
# The container's health: the service's own /readyz (its database, Redis and discovery reachable)
# answering 200. Plain bash, so the runtime image needs no HTTP client.
set -u
exec 3<>"/dev/tcp/127.0.0.1/${HTTP_PORT:-8080}" || exit 1
printf 'GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' >&3
read -r -t 3 _ status _ <&3 || exit 1
[ "$status" = "200" ]
