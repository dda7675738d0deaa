//! The delivery worker against a real SQLite store and a real HTTP endpoint on loopback, with
//! the clock injected: a failed attempt is due again only once the clock passes its back-off,
//! a success ends it, and a delivery failing past `max_age_secs` is dead. Signatures verify
//! with the endpoint's secret.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mailmux_core::credential::random_id;
use mailmux_core::sync::lock;
use mailmux_core::{Config, Tenant, Tier};
use mailmux_store::{InboundMessage, MasterKey, NewWebhookDelivery, Store, Webhook};
use mailmux_webhooks::{Clock, Secret, Worker, seal_secret};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct ManualClock(AtomicI64);

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Each request's head and body, in arrival order.
type Requests = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// An endpoint answering 500 to its first `fail_first` requests, then 204; keeps each
/// request's head and body.
struct Endpoint {
    url: String,
    requests: Requests,
}

async fn endpoint(fail_first: usize) -> Endpoint {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    let count = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let (seen, count) = (seen.clone(), count.clone());
            tokio::spawn(async move {
                let mut raw = Vec::new();
                let mut buf = [0u8; 4096];
                let (head, body) = loop {
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    raw.extend_from_slice(&buf[..n]);
                    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&raw[..end]).to_string();
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    if raw.len() >= end + 4 + length {
                        break (head, raw[end + 4..end + 4 + length].to_vec());
                    }
                };
                lock(&seen).push((head, body));
                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                let status = if n <= fail_first {
                    "500 Internal Server Error"
                } else {
                    "204 No Content"
                };
                let reply = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
                let _ = stream.write_all(reply.as_bytes()).await;
            });
        }
    });
    Endpoint { url, requests }
}

struct Rig {
    store: Store,
    worker: Arc<Worker>,
    clock: Arc<ManualClock>,
    secret: Secret,
    tenant: String,
    webhook: String,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn rig(url: &str) -> Rig {
    let dir = std::env::temp_dir().join(random_id("mailmux-webhooks-", 12));
    std::fs::create_dir_all(&dir).unwrap();
    let mut config = Config::default();
    config.storage.data_dir = dir.clone();
    config.webhooks.allowed_networks = vec!["127.0.0.0/8".parse().unwrap()];
    config.webhooks.retry_initial_ms = 10_000;
    config.webhooks.max_age_secs = 60;
    let store = Store::connect(&format!("sqlite://{}/m.db", dir.display()), 4)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let tenant = Tenant::new(random_id("t_", 16), "t".into(), Tier::Professional, 0);
    store.create_tenant(&tenant, None).await.unwrap();
    let master = MasterKey::load_or_create(&dir.join("master.key")).unwrap();
    let secret = Secret::generate().unwrap();
    let id = random_id("wh_", 16);
    let webhook = Webhook {
        secret_sealed: seal_secret(&master, &id, &secret).unwrap(),
        id: id.clone(),
        tenant_id: tenant.id.clone(),
        url: url.to_string(),
        kind: "inbound".into(),
        event_types: vec![],
        previous_secret_sealed: None,
        previous_secret_expires_at: None,
        enabled: true,
        created_at: 0,
        updated_at: 0,
    };
    store.create_webhook(&webhook, None).await.unwrap();
    let clock = Arc::new(ManualClock(AtomicI64::new(1_000_000)));
    let worker = Arc::new(Worker::new(
        store.clone(),
        &config,
        "node-1".into(),
        clock.clone(),
    ));
    Rig {
        store,
        worker,
        clock,
        secret,
        tenant: tenant.id,
        webhook: id,
        _dir: TempDir(dir),
    }
}

impl Rig {
    /// A message with one delivery, made at the clock's time: the delivery's id.
    async fn message(&self) -> String {
        let now = self.clock.now_ms();
        let message = InboundMessage {
            id: random_id("m", 16),
            tenant_id: self.tenant.clone(),
            mail_from: "ann@example.org".into(),
            recipients: "[]".into(),
            size: 3,
            raw: b"x\r\n".to_vec(),
            received_at: now,
            verdicts: None,
        };
        let delivery = NewWebhookDelivery {
            id: mailmux_webhooks::new_delivery_id(),
            webhook_id: self.webhook.clone(),
            tenant_id: self.tenant.clone(),
            event_type: "inbound.message".into(),
            message_id: Some(message.id.clone()),
            payload: "{\"hello\":1}".into(),
            created_at: now,
        };
        self.store
            .store_inbound_with_webhooks(&[message], std::slice::from_ref(&delivery))
            .await
            .unwrap();
        delivery.id
    }

    /// Waits until the delivery has `attempts` attempts recorded; returns its status.
    async fn attempted(&self, id: &str, attempts: u32) -> String {
        for _ in 0..500 {
            let d = self
                .store
                .get_webhook_delivery(&self.tenant, &self.webhook, id)
                .await
                .unwrap()
                .unwrap();
            if d.attempts >= attempts {
                return d.status;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("delivery {id} never reached {attempts} attempts");
    }

    fn advance(&self, ms: i64) {
        self.clock.0.fetch_add(ms, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_failure_waits_for_its_back_off_then_delivers_signed() {
    let endpoint = endpoint(1).await;
    let rig = rig(&endpoint.url).await;
    let id = rig.message().await;
    assert_eq!(rig.worker.poll_once().await.unwrap(), 1);
    assert_eq!(rig.attempted(&id, 1).await, "pending");
    // Not due before the back-off (10 s ±20 %) has passed on the injected clock.
    assert_eq!(rig.worker.poll_once().await.unwrap(), 0);
    rig.advance(7_000);
    assert_eq!(rig.worker.poll_once().await.unwrap(), 0);
    rig.advance(6_000);
    assert_eq!(rig.worker.poll_once().await.unwrap(), 1);
    assert_eq!(rig.attempted(&id, 2).await, "delivered");

    let requests = lock(&endpoint.requests).clone();
    assert_eq!(requests.len(), 2);
    for (head, body) in &requests {
        let header = |name: &str| {
            head.lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                })
                .unwrap_or_else(|| panic!("no {name} in {head}"))
        };
        assert_eq!(header("webhook-id"), id);
        let timestamp: i64 = header("webhook-timestamp").parse().unwrap();
        assert_eq!(
            header("webhook-signature"),
            rig.secret.sign(&id, timestamp, body)
        );
        assert_eq!(body, b"{\"hello\":1}");
    }
    // The second attempt is signed at the clock's later time.
    let ts = |i: usize| {
        requests[i]
            .0
            .lines()
            .find_map(|l| l.strip_prefix("webhook-timestamp: "))
            .unwrap()
            .to_string()
    };
    assert_eq!(ts(0), "1000");
    assert_eq!(ts(1), "1013");
    let history = rig.store.webhook_attempts(&id).await.unwrap();
    assert_eq!(history[0].status_code, Some(500));
    assert_eq!(history[1].status_code, Some(204));
}

#[tokio::test]
async fn a_delivery_failing_past_max_age_is_dead() {
    let endpoint = endpoint(usize::MAX).await;
    let rig = rig(&endpoint.url).await;
    let id = rig.message().await;
    assert_eq!(rig.worker.poll_once().await.unwrap(), 1);
    assert_eq!(rig.attempted(&id, 1).await, "pending");
    // The last try is scheduled at the end of the window (60 s), then it is dead.
    let mut attempts = 1;
    while rig.attempted(&id, attempts).await == "pending" {
        rig.advance(20_000);
        if rig.worker.poll_once().await.unwrap() == 1 {
            attempts += 1;
        }
        assert!(attempts < 10, "never dead");
    }
    assert_eq!(rig.attempted(&id, attempts).await, "dead");
    assert!(rig.clock.now_ms() - 1_000_000 >= 60_000);
    assert_eq!(lock(&endpoint.requests).len(), attempts as usize);
}
