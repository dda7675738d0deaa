//! `mailmux health`: asks a running server's `GET /healthz` and succeeds only on a 200. It is
//! the container's HEALTHCHECK (the runtime image has no curl) and a quick probe for people.
//!
//! The address is the one the server actually bound, from `<data_dir>/listeners.json`, when
//! that file is there (it is written once every listener is up, and tells the real port when
//! `admin.listen` asks for port 0); otherwise `admin.listen`. An unspecified address
//! (`0.0.0.0`, `[::]`, as in the container) is asked on loopback.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::Context as _;
use mailmux_core::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::output::Shown;

/// The server's health report; an error (exit 1) unless it answered 200.
pub async fn check(config: &Config, timeout: Duration) -> anyhow::Result<Shown> {
    let addr = admin_address(config);
    let (status, body) = tokio::time::timeout(timeout, get_healthz(addr))
        .await
        .with_context(|| format!("http://{addr}/healthz did not answer within {timeout:?}"))??;
    let report: serde_json::Value =
        serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
    if status != 200 {
        anyhow::bail!("http://{addr}/healthz answered {status}: {report}");
    }
    Shown::object(report)
}

fn admin_address(config: &Config) -> SocketAddr {
    let listeners = config.storage.data_dir.join("listeners.json");
    let bound = std::fs::read(&listeners)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|value| value["admin"].as_str()?.parse::<SocketAddr>().ok());
    let mut addr = bound.unwrap_or(config.admin.listen);
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    addr
}

/// One HTTP/1.1 GET with `Connection: close`: the status code and the body. axum sends the
/// JSON of `/healthz` with a Content-Length, so the body is everything after the head; the
/// verdict is the status code alone.
async fn get_healthz(addr: SocketAddr) -> anyhow::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| {
            format!("cannot connect to http://{addr}/healthz (is mailmux serve running?)")
        })?;
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: application/json\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("http://{addr}/healthz: not an HTTP answer"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .with_context(|| format!("http://{addr}/healthz: no status code"))?;
    Ok((status, body.to_string()))
}
