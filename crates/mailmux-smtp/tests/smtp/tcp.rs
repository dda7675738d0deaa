//! Real listeners on 127.0.0.1:0 driven by `serve`: the STARTTLS injection defence, the
//! implicit-TLS port, graceful shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::support::*;

struct Serving {
    submission: SocketAddr,
    submission_tls: SocketAddr,
    mx: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

async fn serve(f: &Fixture) -> Serving {
    let listeners = f.server.bind().await.unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let addrs = (
        listeners.submission_addr(),
        listeners.submission_tls_addr(),
        listeners.mx_addr(),
    );
    let task = tokio::spawn(mailmux_smtp::serve(f.server.clone(), listeners, async {
        let _ = stopped.await;
    }));
    Serving {
        submission: addrs.0,
        submission_tls: addrs.1,
        mx: addrs.2,
        stop,
        task,
    }
}

#[tokio::test]
async fn commands_pipelined_after_starttls_are_discarded() {
    let f = Fixture::new().await;
    let serving = serve(&f).await;
    let mut c = Client::new(TcpStream::connect(serving.submission).await.unwrap());
    c.reply().await.expect_code(220);
    c.cmd("EHLO client.test").await.expect_code(250);
    // One write: an attacker in the middle appends RSET to the client's STARTTLS.
    c.send("STARTTLS\r\nRSET\r\n").await;
    c.reply().await.expect(220, "2.0.0");
    assert!(
        c.silent_for(Duration::from_millis(300)).await,
        "the server answered the injected command in the clear"
    );
    let mut c = Client::new(f.tls(c.into_inner()).await);
    // Had the RSET run inside TLS, its 250 would be waiting here.
    assert!(c.silent_for(Duration::from_millis(300)).await);
    c.cmd("MAIL FROM:<alice@acme.test>")
        .await
        .expect(503, "5.5.1")
        .expect_text("EHLO");
    let ehlo = c.cmd("EHLO client.test").await;
    assert!(
        ehlo.lines.iter().any(|l| l == "AUTH PLAIN LOGIN"),
        "{ehlo:?}"
    );
    let _ = serving.stop.send(());
}

#[tokio::test]
async fn implicit_tls_port_offers_auth_and_accepts_mail() {
    let f = Fixture::new().await;
    let serving = serve(&f).await;
    let tcp = TcpStream::connect(serving.submission_tls).await.unwrap();
    let mut c = Client::new(f.tls(tcp).await);
    c.reply().await.expect_code(220);
    let ehlo = c.cmd("EHLO client.test").await;
    assert!(
        ehlo.lines.iter().any(|l| l == "AUTH PLAIN LOGIN"),
        "{ehlo:?}"
    );
    assert!(!ehlo.lines.iter().any(|l| l == "STARTTLS"), "{ehlo:?}");
    c.cmd(&auth_plain(&f.username, &f.password))
        .await
        .expect(235, "2.7.0");
    let from = "alice@acme.test";
    let id = queued_id(
        &c.send_message(from, &["bob@example.org"], &message(from))
            .await,
    );
    assert!(f.queue.load_pending(&id).await.unwrap().is_some());
    let _ = serving.stop.send(());
}

#[tokio::test]
async fn shutdown_closes_idle_sessions_and_stops_listening() {
    let f = Fixture::new().await;
    let serving = serve(&f).await;
    let mut c = Client::new(TcpStream::connect(serving.mx).await.unwrap());
    c.reply().await.expect_code(220);
    c.cmd("EHLO mta.example").await.expect_code(250);
    serving.stop.send(()).unwrap();
    c.reply().await.expect(421, "4.3.2");
    assert!(c.is_closed().await);
    tokio::time::timeout(Duration::from_secs(5), serving.task)
        .await
        .expect("serve returns once sessions are done")
        .unwrap();
    assert!(TcpStream::connect(serving.submission).await.is_err());
}
