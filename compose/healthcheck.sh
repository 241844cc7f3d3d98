#!/bin/bash
# The container's health: the service's own /readyz (its database, Redis and discovery reachable)
# answering 200; Prometheus's image asks its /-/ready (HEALTH_PATH, HTTP_PORT). Plain bash, so the images
# need no HTTP client.
set -u
exec 3<>"/dev/tcp/127.0.0.1/${HTTP_PORT:-8080}" || exit 1
printf 'GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' "${HEALTH_PATH:-/readyz}" >&3
read -r -t 3 _ status _ <&3 || exit 1
[ "$status" = "200" ]
