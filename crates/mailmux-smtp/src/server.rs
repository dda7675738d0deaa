//! The listeners: bind, accept, admit (the connection limits and the lockout, from the
//! guards), TLS, graceful shutdown; then each connection is handed to a session
//! (`session.rs`). The shared context the sessions run in is `context.rs`.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::context::{Listener, Server};
use crate::error::{Result, SmtpError};
use crate::metrics::{Metrics, RejectReason};
use crate::reply::Reply;
use crate::session::{Conn, Exit, Session};

/// How long `serve` waits, after it stops accepting, for open sessions to finish. Idle
/// sessions close at once (421); this bounds a message still being transferred.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The three bound listeners, bound before serving so the caller can learn the ports.
pub struct Listeners {
    submission: TcpListener,
    submission_tls: TcpListener,
    mx: TcpListener,
}

impl Listeners {
    pub fn submission_addr(&self) -> SocketAddr {
        local_addr(&self.submission)
    }
    pub fn submission_tls_addr(&self) -> SocketAddr {
        local_addr(&self.submission_tls)
    }
    pub fn mx_addr(&self) -> SocketAddr {
        local_addr(&self.mx)
    }
}

fn local_addr(listener: &TcpListener) -> SocketAddr {
    listener
        .local_addr()
        .expect("a bound TCP listener has a local address")
}

/// Holds a session's place in the connection limits; gives it back when dropped.
struct Admission {
    server: Arc<Server>,
    ip: IpAddr,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.server.per_ip.leave(self.ip);
        self.server
            .metrics
            .sessions_active
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl Server {
    /// Binds submission (STARTTLS), submission_tls (implicit TLS) and mx from the config
    /// (port 0 picks a free port; see [`Listeners`] for the result).
    pub async fn bind(&self) -> std::io::Result<Listeners> {
        let smtp = &self.config.smtp;
        Ok(Listeners {
            submission: TcpListener::bind(smtp.submission).await?,
            submission_tls: TcpListener::bind(smtp.submission_tls).await?,
            mx: TcpListener::bind(smtp.mx).await?,
        })
    }

    /// Runs one SMTP conversation over `stream` (TCP, TLS or an in-memory pipe) from `peer`,
    /// as `listener` would: admission, greeting, STARTTLS upgrade, until the client leaves.
    pub async fn serve_connection<S>(
        self: Arc<Self>,
        stream: S,
        peer: SocketAddr,
        listener: Listener,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let id = format!("{:x}", self.next_session.fetch_add(1, Ordering::Relaxed));
        let span =
            info_span!("smtp", session = %id, peer = %peer.ip(), listener = listener.as_str());
        async move {
            let admission = match self.admit(peer.ip()) {
                Ok(admission) => admission,
                Err(reply) => {
                    self.metrics.reject(RejectReason::Connection);
                    info!(%reply, "connection refused");
                    // On the implicit-TLS port a plaintext reply would only confuse the client,
                    // and a handshake is what an overload or a lockout should not pay for.
                    if listener != Listener::SubmissionTls {
                        self.say_and_close(stream, &reply).await;
                    }
                    return;
                }
            };
            debug!("connected");
            let conn = Conn {
                peer,
                listener,
                tls: false,
                deadline: Instant::now() + self.config.smtp.session_timeout(),
            };
            if let Err(error) = self.converse(stream, conn).await {
                debug!(%error, "session ended");
            }
            drop(admission);
        }
        .instrument(span)
        .await
    }

    async fn converse<S>(self: &Arc<Self>, stream: S, mut conn: Conn) -> Result<()>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        if conn.listener == Listener::SubmissionTls {
            let stream = self.handshake(stream).await?;
            conn.tls = true;
            Session::new(self.clone(), stream, conn)
                .greet()
                .run()
                .await?;
            return Ok(());
        }
        match Session::new(self.clone(), stream, conn.clone())
            .greet()
            .run()
            .await?
        {
            Exit::Closed => Ok(()),
            Exit::StartTls(stream) => {
                let stream = self.handshake(stream).await?;
                conn.tls = true;
                debug!("STARTTLS done");
                // A new session: nothing said before the handshake carries over (RFC 3207 §4.2).
                Session::new(self.clone(), stream, conn).run().await?;
                Ok(())
            }
        }
    }

    async fn handshake<S>(&self, stream: S) -> Result<tokio_rustls::server::TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        tokio::time::timeout(self.config.smtp.command_timeout(), self.tls.accept(stream))
            .await
            .map_err(|_| SmtpError::Timeout("finish the TLS handshake"))?
            .map_err(SmtpError::Tls)
    }

    /// Takes a place in the connection limits, or says why not (421).
    fn admit(self: &Arc<Self>, ip: IpAddr) -> std::result::Result<Admission, Reply> {
        if self.auth_failures.locked_out(ip) {
            Metrics::add(&self.metrics.auth_lockouts);
            return Err(Reply::new(
                421,
                "4.7.0",
                "Too many authentication failures from your address, try again later",
            ));
        }
        let Ok(slot) = self.connections.clone().try_acquire_owned() else {
            return Err(Reply::new(
                421,
                "4.7.0",
                "Too many connections, try again later",
            ));
        };
        if !self.per_ip.try_enter(ip) {
            return Err(Reply::new(
                421,
                "4.7.0",
                "Too many connections from your address, try again later",
            ));
        }
        self.metrics.sessions_active.fetch_add(1, Ordering::Relaxed);
        Ok(Admission {
            server: self.clone(),
            ip,
            _slot: slot,
        })
    }

    async fn say_and_close<S: AsyncWrite + Unpin>(&self, mut stream: S, reply: &Reply) {
        let mut out = Vec::new();
        reply.write_to(&mut out);
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            stream.write_all(&out).await?;
            stream.shutdown().await
        })
        .await;
    }
}

/// Accept loops for all three listeners until `shutdown` resolves; then stops accepting,
/// tells idle sessions to leave and waits (bounded) for the others to finish.
pub async fn serve(server: Arc<Server>, listeners: Listeners, shutdown: impl Future<Output = ()>) {
    let mut sessions = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (accepted, listener) = tokio::select! {
            _ = &mut shutdown => break,
            // Reap finished sessions so the set does not grow with the connection count.
            Some(_) = sessions.join_next(), if !sessions.is_empty() => continue,
            accepted = listeners.submission.accept() => (accepted, Listener::Submission),
            accepted = listeners.submission_tls.accept() => (accepted, Listener::SubmissionTls),
            accepted = listeners.mx.accept() => (accepted, Listener::Mx),
        };
        match accepted {
            Ok((stream, peer)) => {
                // Replies are small and latency-bound: do not let Nagle hold them back.
                let _ = stream.set_nodelay(true);
                sessions.spawn(server.clone().serve_connection(stream, peer, listener));
            }
            Err(error) => {
                // Typically out of file descriptors: back off instead of spinning.
                warn!(%error, listener = listener.as_str(), "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    drop(listeners);
    server.shutdown.send_replace(true);
    info!(
        open = sessions.len(),
        "SMTP listeners closed; letting open sessions finish"
    );
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            open = sessions.len(),
            "sessions still open after the grace period; closing them"
        );
        sessions.shutdown().await;
    }
}
