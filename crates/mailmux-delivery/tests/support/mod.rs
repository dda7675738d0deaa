//! Test harness: a real SQLite store in a temp dir, the real queue, the real deliverer, plus
//! the loopback DNS server and SMTP sinks in `dns` and `sink`.

#![allow(dead_code)]

pub mod dns;
pub mod sink;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mailmux_core::{BodyFlags, Config, Envelope, QueueId, Tenant, Tier, now_ms};
use mailmux_delivery::Deliverer;
use mailmux_queue::{Queue, Submission};
use mailmux_store::Store;
use sqlx::Row;

/// A configuration for loopback delivery: DNS at `dns`, MX hosts on `mx_port`.
pub fn config(dns: SocketAddr, mx_port: u16) -> Config {
    let mut config = Config::default();
    config.smtp.hostname = "relay.mailmux.test".into();
    config.delivery.dns_servers = vec![dns];
    config.delivery.mx_port = mx_port;
    // The test MX hosts are on loopback, which direct delivery refuses unless allowed.
    config.delivery.allowed_networks = vec!["127.0.0.0/8".parse().unwrap()];
    config.delivery.connect_timeout_secs = 5;
    config.delivery.command_timeout_secs = 10;
    // Long enough that a deferred message is never retried during a test.
    config.delivery.retry_initial_secs = 300;
    // Exact retry times: the tests check them.
    config.delivery.retry_jitter = 0.0;
    config.delivery.concurrency = 4;
    config.queue.poll_interval_ms = 100;
    config
}

/// One recipient's state in the store.
#[derive(Debug, Clone)]
pub struct RecipientState {
    pub address: String,
    pub status: String,
    pub attempts: u32,
    pub reply: String,
}

/// One message row.
#[derive(Debug, Clone)]
pub struct MessageRow {
    pub id: String,
    pub tenant_id: String,
    pub mail_from: String,
    pub origin: String,
    pub status: String,
    pub next_attempt_at: i64,
}

pub struct Harness {
    pub store: Store,
    pub queue: Arc<Queue>,
    pub tenant: String,
    dir: PathBuf,
    db: sqlx::SqlitePool,
    /// Delivery runs until this is dropped with the harness.
    _stop: tokio::sync::watch::Sender<bool>,
}

static DIRS: AtomicUsize = AtomicUsize::new(0);

impl Harness {
    pub async fn start(config: Config) -> Harness {
        Self::start_with(config, |_| {}).await
    }

    /// Starts with the tenant adjusted by `tenant` before delivery begins.
    pub async fn start_with(config: Config, tenant: impl FnOnce(&mut Tenant)) -> Harness {
        let dir = std::env::temp_dir().join(format!(
            "mailmux-delivery-test-{}-{}",
            std::process::id(),
            DIRS.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("mailmux.db").display());
        let store = Store::connect(&url, 4).await.unwrap();
        store.migrate().await.unwrap();
        let mut record = Tenant::new(
            "t_00000000000000aa".into(),
            "test tenant".into(),
            Tier::Starter,
            now_ms(),
        );
        tenant(&mut record);
        store.create_tenant(&record, None).await.unwrap();
        let (queue, jobs) = Queue::start(
            store.clone(),
            "test-node".into(),
            &dir,
            &config.queue,
            &config.delivery,
            &mailmux_core::health::Health::default(),
        )
        .await
        .unwrap();
        let deliverer = Deliverer::new(Arc::new(config), queue.clone()).unwrap();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(deliverer.run(Arc::new(tokio::sync::Mutex::new(jobs)), stopped));
        let db = sqlx::SqlitePool::connect(&url).await.unwrap();
        Harness {
            store,
            queue,
            tenant: record.id,
            dir,
            db,
            _stop: stop,
        }
    }

    pub async fn send(&self, from: &str, to: &[&str], body: &[u8], flags: BodyFlags) -> QueueId {
        self.queue
            .enqueue(Submission {
                id: self.queue.next_id(),
                tenant_id: self.tenant.clone(),
                envelope: Envelope {
                    mail_from: from.into(),
                    rcpt_to: to.iter().map(|s| s.to_string()).collect(),
                    flags,
                },
                body: body.to_vec(),
                origin: "smtp",
                priority: 0,
            })
            .await
            .unwrap()
    }

    pub async fn recipients(&self, id: &str) -> Vec<RecipientState> {
        self.store
            .recipient_states(id)
            .await
            .unwrap()
            .into_iter()
            .map(|(address, status, attempts, reply)| RecipientState {
                address,
                status,
                attempts,
                reply: reply.unwrap_or_default(),
            })
            .collect()
    }

    /// Waits until every recipient of `id` has been attempted once, and returns them.
    pub async fn attempted(&self, id: &str) -> Vec<RecipientState> {
        self.wait_for(id, |r| r.iter().all(|r| r.attempts >= 1))
            .await
    }

    pub async fn wait_for(
        &self,
        id: &str,
        done: impl Fn(&[RecipientState]) -> bool,
    ) -> Vec<RecipientState> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let recipients = self.recipients(id).await;
            if !recipients.is_empty() && done(&recipients) {
                return recipients;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "message {id} not settled: {recipients:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn messages(&self) -> Vec<MessageRow> {
        sqlx::query(
            "SELECT id, tenant_id, mail_from, origin, status, next_attempt_at FROM messages \
             ORDER BY id",
        )
        .fetch_all(&self.db)
        .await
        .unwrap()
        .iter()
        .map(|row| MessageRow {
            id: row.get("id"),
            tenant_id: row.get("tenant_id"),
            mail_from: row.get("mail_from"),
            origin: row.get("origin"),
            status: row.get("status"),
            next_attempt_at: row.get("next_attempt_at"),
        })
        .collect()
    }

    pub async fn message(&self, id: &str) -> MessageRow {
        self.messages()
            .await
            .into_iter()
            .find(|m| m.id == id)
            .unwrap()
    }

    /// DSNs in the queue.
    pub async fn dsns(&self) -> Vec<MessageRow> {
        self.messages()
            .await
            .into_iter()
            .filter(|m| m.origin == "dsn")
            .collect()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub const EIGHT_BIT: BodyFlags = BodyFlags {
    eight_bit: true,
    smtputf8: false,
};

pub const SEVEN_BIT: BodyFlags = BodyFlags {
    eight_bit: false,
    smtputf8: false,
};
