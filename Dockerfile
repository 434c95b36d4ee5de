# Multi-stage build: compile in the Rust image, run from a small Debian image as a non-root user.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY tests ./tests
# Cargo.toml declares the benches: cargo cannot read the manifest without them.
COPY benches ./benches
RUN cargo build --release --locked --bin pgmux

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home pgmux
COPY --from=build /src/target/release/pgmux /usr/local/bin/pgmux
COPY config/pgmux.toml /etc/pgmux/pgmux.toml
USER 10001
EXPOSE 6432
# SIGTERM: stop accepting, finish what runs; SIGINT: exit at once.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/pgmux"]
CMD ["--config", "/etc/pgmux/pgmux.toml"]
