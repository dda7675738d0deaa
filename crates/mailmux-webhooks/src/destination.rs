//! Where a webhook may be sent (SSRF). A webhook URL is the tenant's to choose, and a relay
//! that POSTs wherever it is told would reach the operator's own network: loopback services,
//! the cloud metadata address, private hosts. So a URL is checked twice with core's
//! [`AddressPolicy`] (the rule direct delivery uses, opened by `webhooks.allowed_networks`):
//!
//! - at creation ([`check_url`]): `http` or `https` only, no user-info, and every address the
//!   host resolves to must be allowed, so the tenant hears at once why an endpoint is refused;
//! - at every connect ([`GuardedResolver`], and [`literal_refusal`] for IP literals, which the
//!   connector does not resolve): only allowed addresses are ever connected to, so a name that
//!   resolved to a public address at creation and to 127.0.0.1 later (DNS rebinding) fails.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::dns::Name;
use mailmux_core::address_policy::AddressPolicy;

/// Longest URL accepted.
const MAX_URL_LEN: usize = 2048;

/// A URL's syntax: absolute `http`/`https` with a host, no user-info; why not otherwise.
pub fn parse_url(url: &str) -> Result<Uri, String> {
    if url.len() > MAX_URL_LEN {
        return Err(format!("url: longer than {MAX_URL_LEN} characters"));
    }
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("url {url:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => {
            return Err(format!(
                "url {url:?}: only http:// and https:// are allowed"
            ));
        }
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("url {url:?}: no host"));
    };
    // Credentials in the URL would be sent on every request and shown in every listing.
    if authority.as_str().contains('@') {
        return Err(format!(
            "url {url:?}: user-info (user:password@) is not allowed; authenticate with the signature"
        ));
    }
    if authority.host().is_empty() {
        return Err(format!("url {url:?}: no host"));
    }
    Ok(uri)
}

/// The host of `uri` when it is an IP literal (`[::1]` without its brackets).
fn literal_ip(uri: &Uri) -> Option<IpAddr> {
    let host = uri.host()?;
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Why an IP-literal URL must not be connected to; `None` for a name or an allowed address.
pub fn literal_refusal(uri: &Uri, policy: &AddressPolicy) -> Option<String> {
    let ip = literal_ip(uri)?;
    policy
        .refusal(ip)
        .map(|kind| format!("{ip} is a {kind} address, not allowed by webhooks.allowed_networks"))
}

/// The creation-time check: syntax, then every address the host resolves to.
pub async fn check_url(url: &str, policy: &AddressPolicy) -> Result<Uri, String> {
    let uri = parse_url(url)?;
    if let Some(refusal) = literal_refusal(&uri, policy) {
        return Err(format!("url {url:?}: {refusal}"));
    }
    if literal_ip(&uri).is_some() {
        return Ok(uri);
    }
    let host = uri.host().unwrap_or_default().to_string();
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
        .await
        .map_err(|e| format!("url {url:?}: {host} does not resolve ({e})"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("url {url:?}: {host} has no address"));
    }
    for addr in &addrs {
        if let Some(kind) = policy.refusal(addr.ip()) {
            return Err(format!(
                "url {url:?}: {host} resolves to {} ({kind}), not allowed by webhooks.allowed_networks",
                addr.ip()
            ));
        }
    }
    Ok(uri)
}

/// The connector's resolver: the system's answer with every refused address taken out; none
/// left is an error naming why, and nothing is connected to.
#[derive(Clone)]
pub struct GuardedResolver {
    policy: Arc<AddressPolicy>,
}

impl GuardedResolver {
    pub fn new(policy: Arc<AddressPolicy>) -> GuardedResolver {
        GuardedResolver { policy }
    }
}

type ResolveFuture =
    Pin<Box<dyn Future<Output = Result<std::vec::IntoIter<SocketAddr>, std::io::Error>> + Send>>;

impl tower::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = ResolveFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|addr| match policy.refusal(addr.ip()) {
                    None => true,
                    Some(kind) => {
                        refused = Some(format!("{} ({kind})", addr.ip()));
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    match refused {
                        Some(what) => format!(
                            "{host} resolves to {what}, not allowed by webhooks.allowed_networks"
                        ),
                        None => format!("{host} has no address"),
                    },
                ));
            }
            Ok(allowed.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback_allowed() -> AddressPolicy {
        AddressPolicy::new(&["127.0.0.0/8".parse().unwrap()])
    }

    #[test]
    fn only_http_and_https_without_user_info() {
        for bad in [
            "ftp://example.com/x",
            "file:///etc/passwd",
            "example.com/hook",
            "/hook",
            "http://user:pw@example.com/hook",
            "http://user@example.com/hook",
            "gopher://example.com",
        ] {
            assert!(parse_url(bad).is_err(), "{bad} must be refused");
        }
        for good in [
            "https://hooks.example.com/in?x=1",
            "http://example.com:8080/",
            "http://[2001:db8::1]/h",
        ] {
            assert!(parse_url(good).is_ok(), "{good}");
        }
        assert!(parse_url(&format!("https://e.com/{}", "a".repeat(3000))).is_err());
    }

    #[tokio::test]
    async fn private_literals_are_refused_unless_allowed() {
        let strict = AddressPolicy::default();
        for url in [
            "http://127.0.0.1:8080/h",
            "http://10.0.0.1/h",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/h",
            "http://0.0.0.0/h",
            "http://100.64.0.1/h",
            "http://224.0.0.1/h",
        ] {
            let error = check_url(url, &strict).await.unwrap_err();
            assert!(
                error.contains("webhooks.allowed_networks"),
                "{url}: {error}"
            );
        }
        assert!(
            check_url("http://127.0.0.1:8080/h", &loopback_allowed())
                .await
                .is_ok()
        );
        // Allowing loopback opens loopback only.
        assert!(
            check_url("http://10.0.0.1/h", &loopback_allowed())
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn names_are_judged_by_what_they_resolve_to() {
        // `localhost` resolves to loopback through /etc/hosts: refused, then allowed.
        let error = check_url("http://localhost:9/h", &AddressPolicy::default())
            .await
            .unwrap_err();
        assert!(error.contains("loopback"), "{error}");
        assert!(
            check_url("http://localhost:9/h", &loopback_allowed())
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn the_connect_time_resolver_drops_refused_addresses() {
        use tower::Service;
        let mut strict = GuardedResolver::new(Arc::new(AddressPolicy::default()));
        let error = strict
            .call("localhost".parse::<Name>().unwrap())
            .await
            .unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::PermissionDenied);
        let mut open = GuardedResolver::new(Arc::new(loopback_allowed()));
        let addrs: Vec<SocketAddr> = open
            .call("localhost".parse::<Name>().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
        assert!(addrs.iter().any(|a| a.is_ipv4()), "{addrs:?}");
    }
}
