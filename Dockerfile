# syntax=docker/dockerfile:1
#
# The sluicegate image: the release binary on distroless (glibc and libgcc,
# no shell, no package manager), running as uid/gid 65532.
#
#   docker build -t ghcr.io/sluicegate/sluicegate:dev .
#   docker run --rm -p 8080:8080 -p 9180:9180 -v "$PWD/examples/demo:/config:ro" \
#     ghcr.io/sluicegate/sluicegate:dev standalone --config /config
#
# Without arguments the image runs `sluicegate controller` (Kubernetes mode).

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS builder
WORKDIR /src

# 1. Dependencies only, against stub sources: this layer is reused until
#    Cargo.toml or Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    mkdir -p src/bin benches \
 && echo 'fn main() {}' > src/main.rs \
 && echo 'fn main() {}' > src/bin/crdgen.rs \
 && echo 'fn main() {}' > benches/router.rs \
 && touch src/lib.rs \
 && cargo build --locked --release --bin sluicegate \
 && rm -rf src

# 2. The crate itself. examples/demo is compiled in (the demo command's
#    built-in manifests). The sources are touched so that cargo never takes
#    them for older than the stub build.
COPY src ./src
COPY examples ./examples
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    find src -name '*.rs' -exec touch {} + \
 && cargo build --locked --release --bin sluicegate \
 && cp target/release/sluicegate /sluicegate \
 && /sluicegate --version

FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="sluicegate" \
      org.opencontainers.image.description="Kubernetes ingress controller and API gateway" \
      org.opencontainers.image.source="https://github.com/sluicegate/sluicegate" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /sluicegate /sluicegate
USER 65532:65532
# proxy (HTTP/1.1 and h2c), proxy (TLS), admin (/healthz /readyz /routes /metrics)
EXPOSE 8080 8443 9180
ENTRYPOINT ["/sluicegate"]
CMD ["controller"]
