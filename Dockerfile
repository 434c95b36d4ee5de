# Multi-stage build: compile in the Rust image, run from debian-slim as a non-root user.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY tests ./tests
# Cargo.toml declares the benches: cargo cannot read the manifest without them.
COPY benches ./benches
# A profile-guided build (scripts/pgo-build.sh): an instrumented pgmux is trained with pgbench
# through a throwaway Postgres the script installs here, then built again with the profile. It
# takes about twice a plain build's time; the binary spent 2-25% less CPU per transaction in the
# benchmarks (README, "The fastest build").
# `docker build --build-arg PGO=0 .` builds without a profile (in the same place).
COPY scripts/pgo-build.sh ./scripts/
ARG PGO=1
RUN PGO=${PGO:-1} bash scripts/pgo-build.sh

# The runtime: glibc from debian-slim (the binary is built against bookworm's), no shell
# tools beyond the base, a numeric non-root user (Kubernetes' runAsNonRoot can check it), and
# nothing written to disk, so the root file system may be mounted read-only.
FROM debian:bookworm-slim
COPY --from=build /src/target/pgo/release/pgmux /usr/local/bin/pgmux
COPY deploy/docker/pgmux.toml /etc/pgmux/pgmux.toml
COPY deploy/docker/userlist.txt /etc/pgmux/userlist.txt
ENV PGMUX_CONFIG=/etc/pgmux/pgmux.toml RUST_LOG=info
USER 10001:10001
# 6432: the Postgres protocol; 9127: /metrics, /health (liveness), /ready (readiness).
EXPOSE 6432 9127
# SIGTERM drains: stop accepting, /ready fails, clients finish within shutdown_timeout.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/pgmux"]
