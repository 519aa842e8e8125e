# syntax=docker/dockerfile:1
#
# One runtime image for everything tusk runs in a cluster: the operator, the PostgreSQL
# instances (`tusk instance` supervising postgres), the backup Jobs (`tusk backup run`, which
# needs pg_basebackup) and the tunnels. It is the official PostgreSQL image of the chosen major
# version plus the `tusk` binary, running as the image's `postgres` user (uid 999, the uid the
# operator's pod specs ask for). Nothing is started through a shell.
#
#   docker build --build-arg PG_MAJOR=15 -t ghcr.io/tusk-dev/tusk-postgres:15 .
#
# The Rust toolchain is pinned to the workspace's rust-version and both bases to Debian
# bookworm. The PostgreSQL base follows the major version's patch releases unless a release
# build pins it by digest: --build-arg POSTGRES_IMAGE=docker.io/library/postgres@sha256:...

ARG PG_MAJOR=15
ARG RUST_IMAGE=docker.io/library/rust:1.95.0-bookworm
ARG POSTGRES_IMAGE=docker.io/library/postgres:${PG_MAJOR}-bookworm

FROM ${RUST_IMAGE} AS build
# aws-lc-sys (object_store's TLS backend) builds C code with cmake and clang.
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake clang \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release -p tusk-cli \
    && install -m 0755 target/release/tusk /usr/local/bin/tusk

FROM ${POSTGRES_IMAGE}
COPY --from=build /usr/local/bin/tusk /usr/local/bin/tusk
# The image's own entrypoint initialises a database through a shell script; tusk does that
# itself, so it is replaced.
USER 999:999
ENTRYPOINT ["/usr/local/bin/tusk"]
CMD ["--help"]
