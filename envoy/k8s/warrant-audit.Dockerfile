# The audit sidecar's image: `warrant-audit` on Debian slim, running as an
# unprivileged user. The database (and, once audit signing lands, its key)
# live under /var/lib/warrant, which the pod mounts from a volume.
#
# Build from the repository root (protoc and SQLite are vendored by the
# crates, so the builder needs nothing beyond the Rust image):
#
#   docker build -f envoy/k8s/warrant-audit.Dockerfile -t REGISTRY/warrant-audit:0.1.0 .
#
# bash stays in the runtime image on purpose: the pod's probes use its
# /dev/tcp to reach the gRPC port on the pod's loopback (see
# envoy/k8s/agent-b.yaml for why a tcpSocket probe cannot).
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p warrant-audit

FROM docker.io/library/debian:bookworm-slim
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin warrant \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/warrant
COPY --from=build /src/target/release/warrant-audit /usr/local/bin/warrant-audit
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/warrant-audit"]
CMD ["serve", "--db", "/var/lib/warrant/audit.db", "--listen", "127.0.0.1:50051"]
