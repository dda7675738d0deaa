//! Load generator for the submission listener: N concurrent sessions, each sending M messages
//! of a given size, over STARTTLS + AUTH PLAIN or in plain text (from a trusted network).
//! Reports accepted messages/s and the latency from the end of DATA to the 250 reply.
//!
//! ```text
//! cargo bench --bench loadgen -- --addr 127.0.0.1:2587 --sessions 20 --messages 500 \
//!     --size 10240 --from bench@bench.test --to user@sink.test [--auth USER:PASS]
//! ```
//! `--message-file PATH` sends that message (dot-stuffed, CRLF) in every transaction instead,
//! e.g. one DKIM-signed for the MX bench (benches/inbound.sh). Prints one JSON object on stdout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Clone)]
struct Options {
    addr: String,
    sessions: usize,
    messages: usize,
    size: usize,
    from: String,
    to: String,
    auth: Option<(String, String)>,
    /// A fixed message (e.g. DKIM-signed by the bench script) sent in every transaction instead
    /// of the generated one; CRLF line endings, without the final `.` line.
    message_file: Option<Arc<Vec<u8>>>,
}

fn parse_options() -> Options {
    let mut options = Options {
        addr: "127.0.0.1:2587".into(),
        sessions: 20,
        messages: 200,
        size: 10 * 1024,
        from: "bench@bench.test".into(),
        to: "user@sink.test".into(),
        auth: None,
        message_file: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--addr" => options.addr = value,
            "--sessions" => options.sessions = value.parse().expect("--sessions N"),
            "--messages" => options.messages = value.parse().expect("--messages N"),
            "--size" => options.size = value.parse().expect("--size BYTES"),
            "--from" => options.from = value,
            "--to" => options.to = value,
            "--auth" => {
                let (user, pass) = value.split_once(':').expect("--auth USER:PASS");
                options.auth = Some((user.into(), pass.into()));
            }
            "--message-file" => {
                let mut bytes = std::fs::read(&value).expect("--message-file PATH");
                if !bytes.ends_with(b"\r\n") {
                    bytes.extend_from_slice(b"\r\n");
                }
                bytes.extend_from_slice(b".\r\n");
                options.message_file = Some(Arc::new(bytes));
            }
            // `cargo bench` passes --bench to every bench target; nothing to do with it.
            "--bench" => {
                i += 1;
                continue;
            }
            other => panic!("unknown option {other}"),
        }
        i += 2;
    }
    options
}

/// A message of about `size` bytes: headers, then 76-character lines.
fn message(options: &Options, n: usize) -> Vec<u8> {
    if let Some(fixed) = &options.message_file {
        return fixed.to_vec();
    }
    let mut body = format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: load {n}\r\nMessage-ID: <{n}.{t}@bench.test>\r\n\
         Date: Mon, 23 Nov 2026 12:00:00 +0000\r\n\r\n",
        from = options.from,
        to = options.to,
        t = std::process::id()
    )
    .into_bytes();
    let line = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmn\r\n";
    while body.len() < options.size {
        body.extend_from_slice(line);
    }
    body.extend_from_slice(b".\r\n");
    body
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

async fn reply(reader: &mut BufReader<Box<dyn Stream>>) -> std::io::Result<(u16, String)> {
    let mut text = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed",
            ));
        }
        text.push_str(&line);
        if line.len() < 4 || line.as_bytes()[3] != b'-' {
            let code = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
            return Ok((code, text));
        }
    }
}

async fn expect(reader: &mut BufReader<Box<dyn Stream>>, class: u16) -> std::io::Result<()> {
    let (code, text) = reply(reader).await?;
    if code / 100 != class {
        return Err(std::io::Error::other(format!(
            "unexpected reply: {}",
            text.trim()
        )));
    }
    Ok(())
}

async fn send(reader: &mut BufReader<Box<dyn Stream>>, bytes: &[u8]) -> std::io::Result<()> {
    reader.get_mut().write_all(bytes).await?;
    reader.get_mut().flush().await
}

/// One session: connect, (STARTTLS + AUTH), then `messages` transactions. Returns the
/// end-of-DATA→250 latencies of the accepted messages and the count of refusals.
async fn session(options: Arc<Options>, index: usize) -> std::io::Result<(Vec<Duration>, usize)> {
    let tcp = TcpStream::connect(&options.addr).await?;
    tcp.set_nodelay(true)?;
    let mut reader: BufReader<Box<dyn Stream>> = BufReader::new(Box::new(tcp));
    expect(&mut reader, 2).await?;
    send(&mut reader, b"EHLO loadgen.test\r\n").await?;
    expect(&mut reader, 2).await?;
    if let Some((user, pass)) = &options.auth {
        send(&mut reader, b"STARTTLS\r\n").await?;
        expect(&mut reader, 2).await?;
        let tcp = reader.into_inner();
        let connector = tokio_rustls::TlsConnector::from(tls_client());
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
        let tls = connector.connect(name, tcp).await?;
        reader = BufReader::new(Box::new(tls));
        send(&mut reader, b"EHLO loadgen.test\r\n").await?;
        expect(&mut reader, 2).await?;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"));
        send(&mut reader, format!("AUTH PLAIN {token}\r\n").as_bytes()).await?;
        expect(&mut reader, 2).await?;
    }
    let mut latencies = Vec::with_capacity(options.messages);
    let mut refused = 0;
    for n in 0..options.messages {
        // PIPELINING: envelope and DATA in one write, as real clients do.
        let envelope = format!(
            "MAIL FROM:<{}>\r\nRCPT TO:<{}>\r\nDATA\r\n",
            options.from, options.to
        );
        send(&mut reader, envelope.as_bytes()).await?;
        expect(&mut reader, 2).await?;
        expect(&mut reader, 2).await?;
        expect(&mut reader, 3).await?;
        send(
            &mut reader,
            &message(&options, index * options.messages + n),
        )
        .await?;
        let sent = Instant::now();
        let (code, _) = reply(&mut reader).await?;
        if code == 250 {
            latencies.push(sent.elapsed());
        } else {
            refused += 1;
        }
    }
    send(&mut reader, b"QUIT\r\n").await?;
    Ok((latencies, refused))
}

fn tls_client() -> Arc<rustls::ClientConfig> {
    #[derive(Debug)]
    struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _: &rustls_pki_types::CertificateDer<'_>,
            _: &[rustls_pki_types::CertificateDer<'_>],
            _: &rustls_pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls_pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &rustls_pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls_pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    // The relay under test uses its generated self-signed certificate.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    Arc::new(config)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let options = Arc::new(parse_options());
    let started = Instant::now();
    let tasks: Vec<_> = (0..options.sessions)
        .map(|i| tokio::spawn(session(options.clone(), i)))
        .collect();
    let mut latencies = Vec::new();
    let (mut refused, mut failed_sessions) = (0, 0);
    for task in tasks {
        match task.await.expect("session task") {
            Ok((l, r)) => {
                latencies.extend(l);
                refused += r;
            }
            Err(error) => {
                eprintln!("session failed: {error}");
                failed_sessions += 1;
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let report = serde_json::json!({
        "sessions": options.sessions,
        "messages_per_session": options.messages,
        "size": options.size,
        "tls_auth": options.auth.is_some(),
        "accepted": latencies.len(),
        "refused": refused,
        "failed_sessions": failed_sessions,
        "elapsed_s": (elapsed * 1000.0).round() / 1000.0,
        "accepted_per_s": ((latencies.len() as f64 / elapsed) * 10.0).round() / 10.0,
        "p50_ms": (percentile(&latencies, 50.0) * 100.0).round() / 100.0,
        "p99_ms": (percentile(&latencies, 99.0) * 100.0).round() / 100.0,
        "max_ms": (latencies.last().map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0) * 100.0).round() / 100.0,
    });
    println!("{report}");
}
