#!/bin/bash
# The container's health: Prometheus's own /-/ready answering 200 (plain bash: the image has no HTTP client).
set -u
exec 3<>"/dev/tcp/127.0.0.1/9090" || exit 1
printf 'GET /-/ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' >&3
read -r -t 3 _ status _ <&3 || exit 1
[ "$status" = "200" ]
