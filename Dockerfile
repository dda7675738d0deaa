# mailmux: multi-stage build; the runtime image holds only the binary and its CA roots, and
# runs as an unprivileged user.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin mailmux

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home-dir /var/lib/mailmux --create-home --shell /usr/sbin/nologin mailmux
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
EXPOSE 587 465 2525 8025
ENTRYPOINT ["mailmux"]
CMD ["serve"]
