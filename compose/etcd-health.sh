#!/bin/sh
# Healthy when etcd answers, signed in as root once authentication is on.
etcdctl --endpoints=http://127.0.0.1:2379 endpoint health >/dev/null 2>&1 \
    || etcdctl --endpoints=http://127.0.0.1:2379 --user "root:${ETCD_ROOT_PASSWORD:-}" endpoint health >/dev/null 2>&1
