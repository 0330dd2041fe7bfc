# syntax=docker/dockerfile:1
#
# lockkeeper's container image:
#
#   docker build -t lockkeeper:0.1.0 .
#
# (etcd for deploy/etcd.yaml and docker-compose.yml is etcd's official image, not built here.)
#
# The sidecar image is a static (musl) binary on an empty base: no shell, no package manager, no
# libc, running as an unprivileged numeric user. Works with a read-only root filesystem.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# === build ===
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
# protoc and its well-known types: etcd-client compiles etcd's protobuf definitions.
# musl-tools: a C compiler for the musl target (ring builds C and assembly).
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev musl-tools \
 && rm -rf /var/lib/apt/lists/*
ARG TARGETARCH
RUN case "${TARGETARCH:-amd64}" in \
      amd64) echo x86_64-unknown-linux-musl ;; \
      arm64) echo aarch64-unknown-linux-musl ;; \
      *) echo "unsupported architecture ${TARGETARCH}" >&2; exit 1 ;; \
    esac >/rust-target \
 && rustup target add "$(cat /rust-target)"
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
# The workspace's other members: the lock library the agent is built on, and the test support
# (cargo refuses a workspace whose members are missing).
COPY crates ./crates
# Cargo.toml declares the benchmark target; cargo refuses a manifest whose targets are missing.
COPY benches ./benches
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin lockkeeper --target "$(cat /rust-target)" \
 && cp "target/$(cat /rust-target)/release/lockkeeper" /lockkeeper

# === the sidecar ===
FROM scratch AS lockkeeper
COPY --from=builder /lockkeeper /lockkeeper
# Numeric, so Kubernetes can verify runAsNonRoot without an /etc/passwd.
USER 65532:65532
EXPOSE 8475
ENTRYPOINT ["/lockkeeper"]
CMD ["run"]
