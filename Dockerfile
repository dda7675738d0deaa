# mailmux: multi-stage build; the runtime image holds only the binary and its CA roots, and
# runs as an unprivileged user.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src

# Dependencies first, in a layer of their own: the manifests, a stub of every crate, one build.
# A change to mailmux's sources then rebuilds only mailmux's crates, not the ~400 dependencies.
# Every workspace member's Cargo.toml is listed here (tests/cli.rs checks that none is missing).
COPY Cargo.toml Cargo.lock ./
COPY crates/mailmux-core/Cargo.toml crates/mailmux-core/
COPY crates/mailmux-store/Cargo.toml crates/mailmux-store/
COPY crates/mailmux-queue/Cargo.toml crates/mailmux-queue/
COPY crates/mailmux-policy/Cargo.toml crates/mailmux-policy/
COPY crates/mailmux-smtp/Cargo.toml crates/mailmux-smtp/
COPY crates/mailmux-delivery/Cargo.toml crates/mailmux-delivery/
COPY crates/mailmux-inbound/Cargo.toml crates/mailmux-inbound/
COPY crates/mailmux-webhooks/Cargo.toml crates/mailmux-webhooks/
COPY crates/mailmux-ses/Cargo.toml crates/mailmux-ses/
COPY crates/mailmux-admin/Cargo.toml crates/mailmux-admin/
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && echo 'fn main() {}' > benches/loadgen.rs \
    && echo 'fn main() {}' > benches/dkim_sign.rs \
    && for crate in crates/*/; do mkdir -p "${crate}src" && touch "${crate}src/lib.rs"; done \
    && cargo build --release --locked --bin mailmux \
    && rm -rf src benches crates/*/src

# Then the sources. COPY keeps their own modification times, which can be older than the stubs
# built above; touching them makes cargo rebuild mailmux's crates from the real code.
COPY . .
RUN find src crates benches -name '*.rs' -exec touch {} + \
    && cargo build --release --locked --bin mailmux

FROM debian:bookworm-slim
# The data directory exists in the image and belongs to the runtime user: a volume mounted
# there starts as a copy of it (owner included), so the first start can write its database,
# certificate and token. Created by Docker for the VOLUME instead, it would belong to root.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home-dir /var/lib/mailmux --create-home --shell /usr/sbin/nologin mailmux \
    && mkdir -p /var/lib/mailmux/data \
    && chown mailmux:mailmux /var/lib/mailmux/data
COPY --from=build /src/target/release/mailmux /usr/local/bin/mailmux
USER mailmux
WORKDIR /var/lib/mailmux
# In a container the listeners must bind all interfaces; the defaults are loopback only.
ENV MAILMUX_SMTP__SUBMISSION=0.0.0.0:587 \
    MAILMUX_SMTP__SUBMISSION_TLS=0.0.0.0:465 \
    MAILMUX_SMTP__MX=0.0.0.0:2525 \
    MAILMUX_ADMIN__LISTEN=0.0.0.0:8025 \
    MAILMUX_STORAGE__DATA_DIR=/var/lib/mailmux/data
VOLUME ["/var/lib/mailmux/data"]
# Submission (STARTTLS), submission (implicit TLS), inbound MX, admin API.
EXPOSE 587 465 2525 8025
# The image has no curl: mailmux asks its own /healthz (exit 0 healthy, 1 not).
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["mailmux", "health", "--timeout-secs", "5"]
ENTRYPOINT ["mailmux"]
CMD ["serve"]
