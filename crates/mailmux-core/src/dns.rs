//! The DNS resolver set-up every part shares (delivery's MX lookups, the admin API's domain
//! verification): the configured `delivery.dns_servers`, or the system configuration.

use std::net::SocketAddr;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::{ResolverBuilder, TokioResolver};

/// A resolver builder on `servers` (UDP, with TCP for truncated answers and UDP failures), or
/// on the system configuration when `servers` is empty. Callers add their own options
/// (timeouts, cache) and build it once.
pub fn resolver_builder(
    servers: &[SocketAddr],
) -> Result<ResolverBuilder<TokioRuntimeProvider>, NetError> {
    let mut builder = if servers.is_empty() {
        TokioResolver::builder_tokio()?
    } else {
        let name_servers = servers
            .iter()
            .map(|server| {
                let mut udp = ConnectionConfig::udp();
                udp.port = server.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = server.port();
                NameServerConfig::new(server.ip(), true, vec![udp, tcp])
            })
            .collect();
        TokioResolver::builder_with_config(
            ResolverConfig::from_parts(None, Vec::new(), name_servers),
            TokioRuntimeProvider::default(),
        )
    };
    let options = builder.options_mut();
    options.try_tcp_on_error = true;
    if !servers.is_empty() {
        // Configured servers are the whole truth (tests rely on it); /etc/hosts is not.
        options.use_hosts_file = ResolveHosts::Never;
    }
    Ok(builder)
}
