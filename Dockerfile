# The forloop worker image: the `runner` binary, nothing else of ours.
# No credentials are ever baked in: workers get them from the platform
# (Workload Identity on GKE, the compose network locally).
#
#   docker build -t forloop-worker .
#   docker build -t my-worker --build-arg EXTRA_PACKAGES="yt-dlp ffmpeg" .
#   docker build -t pubsub-worker --build-arg FEATURES=pubsub .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# Queue drivers to build in (space-separated cargo features of forloop-runner).
ARG FEATURES="redis pubsub"
# The image carries a stripped binary: no symbols and no debug info (the
# release profile keeps line tables for `cargo install`; here they would
# only weigh, and not building them saves time). Panics still name their
# message and location.
RUN CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo build --release --locked -p forloop-runner --features "${FEATURES}" \
 && cp target/release/runner /runner

FROM debian:bookworm-slim
# The commands your items run need to be in the image too.
ARG EXTRA_PACKAGES=""
# tini is PID 1: it reaps the orphans commands leave behind (runner as PID 1
# would leave them zombies) and passes SIGTERM on to runner alone, which
# stops its tasks within the grace and exits with its own code.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tini ${EXTRA_PACKAGES} \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin forloop
COPY --from=build /runner /usr/local/bin/runner
# `--serve` workers in Python import the helper from here (install python3
# with EXTRA_PACKAGES; copy your worker into an image built FROM this one).
COPY python/forloop_worker.py /usr/local/lib/forloop/python/forloop_worker.py
ENV PYTHONPATH=/usr/local/lib/forloop/python
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["tini", "--", "runner"]
CMD ["--help"]
