//! A tiny receiving SMTP server on loopback with scriptable replies: per-recipient RCPT
//! replies, the end-of-data reply, the extensions it offers, STARTTLS (self-signed), AUTH, and
//! closing after each transaction. It records every command and every transaction with the
//! exact bytes received (transparency removed).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine as _;
use mailmux_core::sync::lock;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// How the sink behaves; change it any time through [`Sink::script`].
#[derive(Clone)]
pub struct Script {
    pub greeting: String,
    /// EHLO keywords besides STARTTLS and AUTH (which follow `tls` and `auth`).
    pub extensions: Vec<String>,
    pub mail: String,
    /// RCPT reply per (lowercased) address; `default_rcpt` otherwise.
    pub rcpt: HashMap<String, String>,
    pub default_rcpt: String,
    pub data: String,
    /// Offer STARTTLS with this configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// TLS from the first byte (port 465 style) with this configuration.
    pub implicit_tls: Option<Arc<rustls::ServerConfig>>,
    /// Offer AUTH PLAIN LOGIN and accept these credentials.
    pub auth: Option<(String, String)>,
    /// Drop the connection without a word after each end-of-data reply (a server whose
    /// idle timeout is shorter than ours).
    pub close_after_data: bool,
}

impl Default for Script {
    fn default() -> Script {
        Script {
            greeting: "220 sink.test ESMTP".into(),
            extensions: vec![
                "8BITMIME".into(),
                "SMTPUTF8".into(),
                "ENHANCEDSTATUSCODES".into(),
            ],
            mail: "250 2.1.0 Ok".into(),
            rcpt: HashMap::new(),
            default_rcpt: "250 2.1.5 Ok".into(),
            data: "250 2.0.0 Ok: queued".into(),
            tls: None,
            implicit_tls: None,
            auth: None,
            close_after_data: false,
        }
    }
}

impl Script {
    pub fn rcpt(mut self, address: &str, reply: &str) -> Script {
        self.rcpt.insert(address.to_ascii_lowercase(), reply.into());
        self
    }
}

/// One transaction as the sink saw it.
#[derive(Debug, Clone, Default)]
pub struct Received {
    /// Which connection (1-based) carried it.
    pub connection: usize,
    /// The whole MAIL command line.
    pub mail_from: String,
    /// Accepted recipients.
    pub rcpt_to: Vec<String>,
    /// The message, transparency removed, terminator excluded.
    pub data: Vec<u8>,
    pub tls: bool,
    pub auth_user: Option<String>,
}

#[derive(Default)]
pub struct Log {
    pub commands: Vec<String>,
    pub received: Vec<Received>,
    /// TLS handshakes that failed (the client refused our certificate, or spoke plain text).
    pub tls_failures: usize,
}

pub struct Sink {
    pub addr: SocketAddr,
    script: Arc<Mutex<Script>>,
    log: Arc<Mutex<Log>>,
    connections: Arc<AtomicUsize>,
    /// Connections the sink has closed (their socket dropped), for tests that must not reuse
    /// a connection before its close reached the client.
    closed: tokio::sync::watch::Sender<usize>,
}

impl Sink {
    pub async fn start(listener: TcpListener, script: Script) -> Sink {
        let addr = listener.local_addr().unwrap();
        let script = Arc::new(Mutex::new(script));
        let log = Arc::new(Mutex::new(Log::default()));
        let connections = Arc::new(AtomicUsize::new(0));
        let closed = tokio::sync::watch::Sender::new(0);
        {
            let (script, log, connections) = (script.clone(), log.clone(), connections.clone());
            let closed = closed.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let number = connections.fetch_add(1, Ordering::SeqCst) + 1;
                    let (script, log, closed) = (script.clone(), log.clone(), closed.clone());
                    tokio::spawn(async move {
                        // The session owns the socket: it is closed when the session returns.
                        session(stream, number, script, log).await;
                        closed.send_modify(|n| *n += 1);
                    });
                }
            });
        }
        Sink {
            addr,
            script,
            log,
            connections,
            closed,
        }
    }

    pub fn script(&self) -> MutexGuard<'_, Script> {
        lock(&self.script)
    }

    pub fn received(&self) -> Vec<Received> {
        lock(&self.log).received.clone()
    }

    pub fn commands(&self) -> Vec<String> {
        lock(&self.log).commands.clone()
    }

    pub fn tls_failures(&self) -> usize {
        lock(&self.log).tls_failures
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Waits until the sink has closed `n` connections.
    pub async fn wait_closed(&self, n: usize) {
        let mut closed = self.closed.subscribe();
        tokio::time::timeout(Duration::from_secs(10), closed.wait_for(|c| *c >= n))
            .await
            .expect("the sink did not close the connection")
            .expect("the sink is gone");
    }
}

/// Listeners on `ips`, all on one port (delivery uses one `mx_port` for every MX host).
pub async fn listeners_on_one_port(ips: &[&str]) -> Vec<TcpListener> {
    'again: loop {
        let first = TcpListener::bind((ips[0], 0)).await.unwrap();
        let port = first.local_addr().unwrap().port();
        let mut listeners = vec![first];
        for ip in &ips[1..] {
            match TcpListener::bind((*ip, port)).await {
                Ok(listener) => listeners.push(listener),
                Err(_) => continue 'again,
            }
        }
        return listeners;
    }
}

/// A self-signed certificate for `sink.test`: fine for opportunistic TLS, refused by any
/// verifying client.
pub fn self_signed_tls() -> Arc<rustls::ServerConfig> {
    let certified = rcgen::generate_simple_self_signed(vec!["sink.test".to_string()]).unwrap();
    let cert = certified.cert.der().clone();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .unwrap();
    Arc::new(config)
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

enum Next {
    Close,
    StartTls,
}

async fn session(
    stream: TcpStream,
    number: usize,
    script: Arc<Mutex<Script>>,
    log: Arc<Mutex<Log>>,
) {
    let mut io: Box<dyn Io> = Box::new(stream);
    let mut tls = false;
    let implicit = lock(&script).implicit_tls.clone();
    if let Some(config) = implicit {
        match TlsAcceptor::from(config).accept(io).await {
            Ok(stream) => {
                io = Box::new(stream);
                tls = true;
            }
            Err(_) => {
                lock(&log).tls_failures += 1;
                return;
            }
        }
    }
    let greeting = lock(&script).greeting.clone();
    if io
        .write_all(format!("{greeting}\r\n").as_bytes())
        .await
        .is_err()
        || !greeting.starts_with("220")
    {
        return;
    }
    loop {
        match serve(&mut io, number, tls, &script, &log).await {
            Next::Close => return,
            Next::StartTls => {
                let config = lock(&script).tls.clone().unwrap();
                match TlsAcceptor::from(config).accept(io).await {
                    Ok(stream) => {
                        io = Box::new(stream);
                        tls = true;
                    }
                    Err(_) => {
                        lock(&log).tls_failures += 1;
                        return;
                    }
                }
            }
        }
    }
}

async fn serve(
    io: &mut Box<dyn Io>,
    number: usize,
    tls: bool,
    script: &Mutex<Script>,
    log: &Mutex<Log>,
) -> Next {
    let mut reader = BufReader::new(io);
    let mut current: Option<Received> = None;
    let mut auth_user: Option<String> = None;
    loop {
        let mut line = Vec::new();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return Next::Close,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        lock(log).commands.push(text.clone());
        let upper = text.to_ascii_uppercase();
        let script = lock(script).clone();
        let mut next = None;
        let reply = if upper.starts_with("EHLO") {
            let mut lines = vec!["sink.test".to_string()];
            lines.extend(script.extensions.iter().cloned());
            if script.tls.is_some() && !tls {
                lines.push("STARTTLS".into());
            }
            if script.auth.is_some() {
                lines.push("AUTH PLAIN LOGIN".into());
            }
            let last = lines.len() - 1;
            lines
                .iter()
                .enumerate()
                .map(|(i, l)| format!("250{}{l}\r\n", if i == last { ' ' } else { '-' }))
                .collect::<String>()
        } else if upper.starts_with("STARTTLS") && script.tls.is_some() && !tls {
            next = Some(Next::StartTls);
            "220 2.0.0 Ready to start TLS\r\n".into()
        } else if upper.starts_with("AUTH PLAIN ") {
            // Base64 is case-sensitive: decoded from the line as sent.
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(text["AUTH PLAIN ".len()..].trim().as_bytes())
                .unwrap_or_default();
            let parts: Vec<&[u8]> = decoded.split(|b| *b == 0).collect();
            match (&script.auth, parts.as_slice()) {
                (Some((user, password)), [_, u, p])
                    if *u == user.as_bytes() && *p == password.as_bytes() =>
                {
                    auth_user = Some(user.clone());
                    "235 2.7.0 Authentication successful\r\n".into()
                }
                _ => "535 5.7.8 Authentication credentials invalid\r\n".into(),
            }
        } else if upper.starts_with("MAIL FROM:") {
            if script.auth.is_some() && auth_user.is_none() {
                "530 5.7.0 Authentication required\r\n".into()
            } else {
                if script.mail.starts_with('2') {
                    current = Some(Received {
                        connection: number,
                        mail_from: text.clone(),
                        tls,
                        auth_user: auth_user.clone(),
                        ..Received::default()
                    });
                }
                format!("{}\r\n", script.mail)
            }
        } else if upper.starts_with("RCPT TO:") {
            let address = text[8..]
                .trim()
                .trim_start_matches('<')
                .split('>')
                .next()
                .unwrap_or("")
                .to_string();
            let reply = script
                .rcpt
                .get(&address.to_ascii_lowercase())
                .cloned()
                .unwrap_or(script.default_rcpt.clone());
            match &mut current {
                Some(tx) if reply.starts_with('2') => tx.rcpt_to.push(address),
                Some(_) => {}
                None => {}
            }
            format!("{reply}\r\n")
        } else if upper == "DATA" {
            match current.take() {
                Some(mut tx) if !tx.rcpt_to.is_empty() => {
                    let go = reader
                        .get_mut()
                        .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n");
                    if go.await.is_err() {
                        return Next::Close;
                    }
                    loop {
                        let mut data_line = Vec::new();
                        match reader.read_until(b'\n', &mut data_line).await {
                            Ok(0) | Err(_) => return Next::Close,
                            Ok(_) => {}
                        }
                        if data_line == b".\r\n" {
                            break;
                        }
                        let unstuffed = data_line.strip_prefix(b".").unwrap_or(&data_line);
                        tx.data.extend_from_slice(unstuffed);
                    }
                    if script.data.starts_with('2') {
                        lock(log).received.push(tx);
                    }
                    if script.close_after_data {
                        let _ = reader
                            .get_mut()
                            .write_all(format!("{}\r\n", script.data).as_bytes())
                            .await;
                        return Next::Close;
                    }
                    format!("{}\r\n", script.data)
                }
                _ => "554 5.5.1 No valid recipients\r\n".into(),
            }
        } else if upper == "RSET" {
            current = None;
            "250 2.0.0 Ok\r\n".into()
        } else if upper == "NOOP" {
            "250 2.0.0 Ok\r\n".into()
        } else if upper == "QUIT" {
            let _ = reader.get_mut().write_all(b"221 2.0.0 Bye\r\n").await;
            return Next::Close;
        } else {
            "502 5.5.2 Command not recognized\r\n".into()
        };
        if reader.get_mut().write_all(reply.as_bytes()).await.is_err() {
            return Next::Close;
        }
        if let Some(next) = next {
            return next;
        }
    }
}
