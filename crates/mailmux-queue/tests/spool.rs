//! The body spool through a message's life: written before its row, read back from it, deleted
//! when the message is finished or was never written.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mailmux_core::queued::{DeliveryReport, RecipientResult, RecipientStatus};
use mailmux_core::{BodyFlags, Config, Envelope, Tenant, Tier};
use mailmux_queue::{Queue, QueueError, Submission};
use mailmux_store::Store;

fn submission(queue: &Queue, tenant: &str, body: &[u8]) -> Submission {
    Submission {
        id: queue.next_id(),
        tenant_id: tenant.into(),
        envelope: Envelope {
            mail_from: "a@sp.test".into(),
            rcpt_to: vec!["r@x.test".into()],
            flags: BodyFlags::default(),
        },
        body: body.to_vec(),
        origin: "smtp",
        priority: 0,
    }
}

async fn wait_gone(path: &Path) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while path.exists() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} was not deleted", path.display()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_live_in_the_spool_until_their_message_is_finished() {
    let dir = std::env::temp_dir().join(format!("mailmux-queue-spool-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::connect(&format!("sqlite://{}/q.db", dir.display()), 4)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let mut tenant = Tenant::new("t_sp".into(), "sp".into(), Tier::Enterprise, 0);
    tenant.limits.max_messages_per_day = 2;
    store.create_tenant(&tenant, None).await.unwrap();
    let config = Config::default();
    let (queue, mut jobs) = Queue::start(
        store.clone(),
        "node-sp".into(),
        &dir,
        &config.queue,
        &config.delivery,
        &mailmux_core::health::Health::default(),
    )
    .await
    .unwrap();
    let queue: Arc<Queue> = queue;
    let own = dir.join("spool").join("node-sp");

    // Written once, to the spool, byte for byte; the row holds none of it.
    let body = b"Subject: spooled\r\n\r\n8-bit \xc3\xa9 and a NUL-free body\r\n".to_vec();
    let id = queue
        .enqueue(submission(&queue, "t_sp", &body))
        .await
        .unwrap();
    let file = own.join(&id.0);
    assert_eq!(std::fs::read(&file).unwrap(), body);
    let row = store.load_pending(&id.0).await.unwrap().unwrap();
    assert!(row.body.is_empty());
    assert_eq!(row.body_path, Some(format!("node-sp/{}", id.0)));
    // Read back through the queue (as a claim after a restart does).
    let loaded = queue.load_pending(&id.0).await.unwrap().unwrap();
    assert_eq!(loaded.body.as_slice(), body.as_slice());

    // Delivered from memory, then reported done: the body goes.
    let job = jobs.recv().await.unwrap();
    assert_eq!(job.message.id, id);
    assert_eq!(job.message.body.as_slice(), body.as_slice());
    let deferred = |status| DeliveryReport {
        message_id: id.clone(),
        lease_owner: job.lease.owner().to_string(),
        at: mailmux_core::now_ms(),
        next_attempt_at: mailmux_core::now_ms() + 60_000,
        bounce: None,
        results: vec![RecipientResult {
            idx: 0,
            status,
            reply: "250 ok".into(),
            remote_id: None,
        }],
    };
    let report = deferred(RecipientStatus::Delivered);
    queue.report(report, job.lease).await.unwrap();
    wait_gone(&file).await;

    // Over the daily quota (2): the second is written, the third refused, and its body with it.
    let second = queue
        .enqueue(submission(&queue, "t_sp", b"Subject: 2\r\n\r\n2\r\n"))
        .await
        .unwrap();
    assert!(own.join(&second.0).exists());
    let third = submission(&queue, "t_sp", b"Subject: 3\r\n\r\n3\r\n");
    let third_id = third.id.clone();
    match queue.enqueue(third).await {
        Err(QueueError::OverQuota { max_per_day: 2 }) => {}
        other => panic!("expected over quota, got {other:?}"),
    }
    assert!(!own.join(&third_id.0).exists(), "no body without a row");
    std::fs::remove_dir_all(&dir).ok();
}
