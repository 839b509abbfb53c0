# syntax=docker/dockerfile:1
#
# One builder, one image per service. Every service image shares the builder and the runtime
# base, so building all four compiles the workspace once:
#
#   docker build --target orders    -t spine/orders:0.1.0 .
#   docker build --target inventory -t spine/inventory:0.1.0 .
#   docker build --target email     -t spine/email:0.1.0 .
#   docker build --target analytics -t spine/analytics:0.1.0 .
#   docker build --target spike     -t spine/spike:0.1.0 .        (the load generator)
#
# (docker-compose.yml does the same with `build: {context: ., target: <service>}`.)
# Every image also carries the DLQ tool, /usr/local/bin/spine-dlq, in a layer they share:
#   docker compose exec orders /usr/local/bin/spine-dlq list --group inventory
#
# Stages: chef (toolchain + cargo-chef) -> planner (recipe of the dependency graph) -> builder
# (dependencies cooked in a cached layer, then the workspace) -> runtime (debian-slim, non-root)
# -> one small stage per service.

ARG RUST_VERSION=1.95
ARG CARGO_CHEF_VERSION=0.1.77

# ---------------------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS chef
ARG CARGO_CHEF_VERSION
# librdkafka is compiled from source by rdkafka-sys: it needs a C and C++ compiler and make;
# zlib1g-dev makes libz-sys link the system zlib (libz.so.1) dynamically; the runtime image
# has it. The Rust image already ships these; installing them
# here says so and keeps the build working if the base image slims down.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      gcc g++ make pkg-config zlib1g-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /src

# ---------------------------------------------------------------------------------------------
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# ---------------------------------------------------------------------------------------------
FROM chef AS builder
ENV CARGO_TERM_COLOR=never
# Dependencies only (librdkafka included): this layer is rebuilt only when Cargo.toml or
# Cargo.lock change, not when the code does.
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json \
      -p spine-orders -p spine-inventory -p spine-email -p spine-analytics -p spine-dlq -p spine-spike
# The workspace itself, all binaries in one cargo invocation.
COPY . .
RUN cargo build --release --locked \
      -p spine-orders -p spine-inventory -p spine-email -p spine-analytics -p spine-dlq -p spine-spike \
 && mkdir -p /out/bin \
 && cp target/release/orders target/release/inventory target/release/email \
       target/release/analytics target/release/spine-dlq target/release/spike /out/bin/

# ---------------------------------------------------------------------------------------------
# Debian 12 slim, the same release as the builder: glibc, libgcc_s and zlib (librdkafka links
# libz.so.1) and nothing to compile with. No package is added; the service runs as an
# unprivileged user (65532, as in distroless images) that owns nothing in the image.
FROM debian:bookworm-slim AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.vendor="spine" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# The schema registry client speaks https through the system OpenSSL (native-tls).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libssl3 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --gid 65532 nonroot \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin nonroot
COPY --from=builder /out/bin/spine-dlq /usr/local/bin/spine-dlq
ENV SPINE__HTTP__HOST=0.0.0.0 \
    SPINE__TELEMETRY__LOG_FORMAT=json
WORKDIR /tmp
USER 65532:65532

# ---------------------------------------------------------------------------------------------
FROM runtime AS orders
LABEL org.opencontainers.image.title="spine-orders" \
      org.opencontainers.image.description="The orders service: an HTTP edge that validates, saves and answers 202, with a transactional outbox"
COPY --from=builder /out/bin/orders /usr/local/bin/orders
ENV SPINE__HTTP__PORT=8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/orders", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/orders"]

# ---------------------------------------------------------------------------------------------
FROM runtime AS inventory
LABEL org.opencontainers.image.title="spine-inventory" \
      org.opencontainers.image.description="The inventory service: stock per SKU, reserved all-or-nothing for each placed order"
COPY --from=builder /out/bin/inventory /usr/local/bin/inventory
ENV SPINE__HTTP__PORT=8081
EXPOSE 8081
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/inventory", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/inventory"]

# ---------------------------------------------------------------------------------------------
FROM runtime AS email
LABEL org.opencontainers.image.title="spine-email" \
      org.opencontainers.image.description="The email service: mails customers once per order outcome"
COPY --from=builder /out/bin/email /usr/local/bin/email
ENV SPINE__HTTP__PORT=8082
EXPOSE 8082
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/email", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/email"]

# ---------------------------------------------------------------------------------------------
FROM runtime AS analytics
LABEL org.opencontainers.image.title="spine-analytics" \
      org.opencontainers.image.description="The analytics service: idempotent aggregates of every fact"
COPY --from=builder /out/bin/analytics /usr/local/bin/analytics
ENV SPINE__HTTP__PORT=8083
EXPOSE 8083
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/analytics", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/analytics"]

# ---------------------------------------------------------------------------------------------
# The spike load generator (tools/spike), a one-shot job rather than a service: run it with
# `docker compose --profile spike run --rm spike --help`. Reports go to /tmp/spike-report
# unless --out names a mounted directory.
FROM runtime AS spike
LABEL org.opencontainers.image.title="spine-spike" \
      org.opencontainers.image.description="Open-model load on POST /orders, followed end to end through Kafka, with a verdict"
COPY --from=builder /out/bin/spike /usr/local/bin/spike
HEALTHCHECK NONE
ENTRYPOINT ["/usr/local/bin/spike"]
