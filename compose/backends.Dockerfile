# Redis, etcd and Prometheus for the compose stack (and Redis for Kubernetes), from Debian's packages —
# the same servers the local run uses — running as the same non-root user (10001) as the services.
#
#   podman build -f compose/backends.Dockerfile --target redis -t hailstorm/redis .
#   podman build -f compose/backends.Dockerfile --target etcd -t hailstorm/etcd .
#   podman build -f compose/backends.Dockerfile --target prometheus -t hailstorm/prometheus .
ARG RUNTIME_IMAGE=docker.io/library/debian:bookworm-slim

FROM ${RUNTIME_IMAGE} AS redis
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
 && groupadd --gid 10001 hailstorm \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin hailstorm \
 && mkdir -p /data && chown 10001:10001 /data
COPY --chmod=0755 compose/redis-start.sh /usr/local/bin/redis-start
COPY --chmod=0755 compose/redis-health.sh /usr/local/bin/redis-health
COPY --chmod=0755 compose/redis-cluster-init.sh /usr/local/bin/redis-cluster-init
USER 10001:10001
VOLUME ["/data"]
EXPOSE 6379
HEALTHCHECK --interval=5s --timeout=3s --retries=5 CMD ["redis-health"]
# With REDIS_PASSWORD (or REDIS_PASSWORD_FILE) set, clients must sign in; see redis-start.
CMD ["redis-start", "--bind", "0.0.0.0", "--protected-mode", "no", "--dir", "/data", "--appendonly", "yes", "--save", ""]

FROM ${RUNTIME_IMAGE} AS etcd
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends etcd-server etcd-client \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
 && groupadd --gid 10001 hailstorm \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin hailstorm \
 && mkdir -p /data && chown 10001:10001 /data
COPY --chmod=0755 compose/etcd-start.sh /usr/local/bin/etcd-start
COPY --chmod=0755 compose/etcd-health.sh /usr/local/bin/etcd-health
USER 10001:10001
VOLUME ["/data"]
EXPOSE 2379
ENV ETCDCTL_API=3
HEALTHCHECK --interval=5s --timeout=3s --retries=5 CMD ["etcd-health"]
# With ETCD_ROOT_PASSWORD and ETCD_HAILSTORM_PASSWORD set, authentication is turned on; see etcd-start.
CMD ["etcd-start", "--name", "etcd", "--data-dir", "/data/etcd", \
     "--listen-client-urls", "http://0.0.0.0:2379", "--advertise-client-urls", "http://etcd:2379", \
     "--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380", \
     "--initial-cluster", "etcd=http://127.0.0.1:2380"]

FROM ${RUNTIME_IMAGE} AS prometheus
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb /usr/share/prometheus/consoles* \
 && groupadd --gid 10001 hailstorm \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin hailstorm \
 && mkdir -p /data /etc/hailstorm && chown 10001:10001 /data
COPY compose/prometheus.yml /etc/hailstorm/prometheus.yml
# The rules every way of running shares.
COPY k8s/components/prometheus/hailstorm-rules.yml /etc/hailstorm/hailstorm-rules.yml
# The services' health check, pointed at Prometheus's readiness.
COPY --chmod=0755 compose/healthcheck.sh /usr/local/bin/prometheus-health
ENV HTTP_PORT=9090 HEALTH_PATH=/-/ready
USER 10001:10001
VOLUME ["/data"]
EXPOSE 9090
HEALTHCHECK --interval=5s --timeout=3s --retries=5 CMD ["prometheus-health"]
CMD ["prometheus", "--config.file=/etc/hailstorm/prometheus.yml", "--storage.tsdb.path=/data", \
     "--storage.tsdb.retention.time=2d", "--web.listen-address=0.0.0.0:9090"]
