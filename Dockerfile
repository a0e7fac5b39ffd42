# syntax=docker/dockerfile:1
# metricsctl as a small runtime image. Built by docker-compose.yml (profile "pipeline"):
#   docker compose --profile pipeline up --build
# or alone: docker build -t metricsctl . && docker run --rm metricsctl --help

# --- Stage 1: build the release binary with the locked dependency versions -------------------
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the crate downloads and compiled dependencies between builds (BuildKit);
# the binary is copied out of the cached target dir so the next stage can see it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
 && install -m 0755 target/release/metricsctl /usr/local/bin/metricsctl

# --- Stage 2: runtime: the binary, CA certificates (TLS to MongoDB Atlas), a non-root user ----
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin metricsctl
COPY --from=build /usr/local/bin/metricsctl /usr/local/bin/metricsctl
USER metricsctl
WORKDIR /home/metricsctl
ENTRYPOINT ["metricsctl"]
CMD ["--help"]
