//! The shared context every session runs in, built once at start-up: configuration, store,
//! queue, the submission policy with its rate limiters, the guards (connection limits, the
//! AUTH lockout, the credential cache, tenant places), TLS, metrics and the shutdown signal.
//! Verb files reach everything through it; it knows nothing of sockets.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use mailmux_core::Config;
use mailmux_inbound::Inbound;
use mailmux_policy::{Policy, RateLimits};
use mailmux_queue::Queue;
use mailmux_store::Store;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::guards::{AuthFailures, CredentialCache, PerIpSessions, TenantSessions};
use crate::metrics::Metrics;

/// The shared context, built once at start-up and handed to every session.
pub struct Server {
    pub(crate) config: Arc<Config>,
    pub(crate) store: Store,
    pub(crate) queue: Arc<Queue>,
    /// The MX side: receipt rules and stored inbound mail.
    pub(crate) inbound: Inbound,
    /// MX: messages per client IP (`smtp.mx_rate_per_minute`), on tokio's clock.
    pub(crate) mx_rates: RateLimits,
    /// The submission policy, with the rate limiters it keeps; built here, once, and shared
    /// with the HTTP send API through [`Server::policy`].
    pub(crate) policy: Arc<Policy>,
    /// Open authenticated sessions per tenant, against the tenant's `max_connections`.
    pub(crate) tenant_sessions: Arc<TenantSessions>,
    pub(crate) tls: TlsAcceptor,
    pub(crate) metrics: Arc<Metrics>,
    /// A `Semaphore` limits the number of concurrent sessions over all listeners.
    pub(crate) connections: Arc<Semaphore>,
    /// Open sessions per client IP, against `smtp.max_connections_per_ip`.
    pub(crate) per_ip: PerIpSessions,
    pub(crate) auth_failures: AuthFailures,
    pub(crate) credentials: CredentialCache,
    /// Set once by [`serve`] when shutdown begins: idle sessions answer 421 and close.
    pub(crate) shutdown: watch::Sender<bool>,
    pub(crate) next_session: AtomicU64,
}

impl Server {
    pub fn new(
        config: Arc<Config>,
        store: Store,
        queue: Arc<Queue>,
        tls: Arc<rustls::ServerConfig>,
    ) -> Arc<Server> {
        let smtp = &config.smtp;
        Arc::new(Server {
            connections: Arc::new(Semaphore::new(smtp.max_connections)),
            per_ip: PerIpSessions::new(config.smtp.max_connections_per_ip),
            auth_failures: AuthFailures::new(
                smtp.auth_failure_limit,
                smtp.auth_failure_ip_limit,
                Duration::from_secs(smtp.auth_failure_window_secs),
            ),
            credentials: CredentialCache::default(),
            policy: Arc::new(Policy::new(&config, store.clone())),
            tenant_sessions: Arc::default(),
            tls: TlsAcceptor::from(tls),
            metrics: Arc::new(Metrics::default()),
            shutdown: watch::Sender::new(false),
            next_session: AtomicU64::new(1),
            inbound: Inbound::new(store.clone(), queue.clone(), &config),
            mx_rates: RateLimits::default(),
            config,
            store,
            queue,
        })
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The submission policy (and its rate limiters): hand it to the HTTP send API so that a
    /// tenant has one allowance in this process, whichever way its mail comes in.
    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// The MX side (receipt rules, stored mail): `serve` runs its retention job.
    pub fn inbound(&self) -> &Inbound {
        &self.inbound
    }

    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }
}

/// Which listener a connection came in on; it decides TLS, AUTH and the MX rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Submission, plain until STARTTLS (587-style).
    Submission,
    /// Submission, TLS from the first byte (465-style).
    SubmissionTls,
    /// Inbound MX: no AUTH; mail only for tenant domains.
    Mx,
}

impl Listener {
    pub fn is_submission(self) -> bool {
        self != Listener::Mx
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Submission => "submission",
            Listener::SubmissionTls => "submission_tls",
            Listener::Mx => "mx",
        }
    }
}
