#!/bin/sh
# Starts the service of this image. Under etcd discovery an instance announces the address other
# containers reach it at: its own address on the network, unless HTTP_ADVERTISE_HOST says otherwise.
set -eu
if [ -z "${HTTP_ADVERTISE_HOST:-}" ]; then
    HTTP_ADVERTISE_HOST=$(hostname -i | cut -d' ' -f1)
    export HTTP_ADVERTISE_HOST
fi
exec /usr/local/bin/hailstorm-service "$@"
