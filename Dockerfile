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
# Multi-arch images (linux/amd64 and linux/arm64) are built with
# `docker buildx build --platform linux/amd64,linux/arm64`: see
# docs/image.md.
#
# The dependency layer is made with cargo-chef: `cargo chef prepare` reduces
# the project to its manifests, lock file and the list of its targets (every
# bin and bench, with empty sources), and `cargo chef cook` builds the
# dependencies of that skeleton. The layer is reused until a manifest, the
# lock file or the set of targets changes, and no list of targets is kept
# by hand here. CI replays the builder stages' commands without a container
# engine (scripts/replay-dockerfile.py), so a change that breaks them fails
# there.

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot
ARG CARGO_CHEF_VERSION=0.1.78

FROM ${RUST_IMAGE} AS chef
ARG CARGO_CHEF_VERSION
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /src

# 1. The recipe. The build context is what .dockerignore lets through:
#    Cargo.toml, Cargo.lock, src/, benches/ (targets the manifest names),
#    examples/ (the demo's manifests are compiled in) and vendor/.
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# 2. Dependencies only, from the recipe: this layer is reused until the
#    recipe or the profile changes. The registry cache is shared by
#    parallel platform builds, hence the lock.
FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# A patched dependency (Cargo.toml's [patch.crates-io]) is a dependency
# like the others: the recipe names it, the layer builds it.
COPY vendor vendor
# Profile-guided optimisation (bench/pgo.sh records the profile): the
# dependencies and the crate are compiled with it, in both steps, so that
# the second reuses the first's artifacts. Functions the profile does not
# match (changed since, or of the other architecture) are compiled as
# without it.
COPY pgo pgo
ENV RUSTFLAGS="-Cprofile-use=/src/pgo/sluicegate.profdata"
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    cargo chef cook --locked --release --bin sluicegate --recipe-path recipe.json

# 3. The crate itself. The commit shows in `sluicegate_build_info`
#    (`--build-arg SLUICEGATE_COMMIT=$(git rev-parse HEAD)`).
ARG SLUICEGATE_COMMIT=unknown
ENV SLUICEGATE_COMMIT=${SLUICEGATE_COMMIT}
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    cargo build --locked --release --bin sluicegate \
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
