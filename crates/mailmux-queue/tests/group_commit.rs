//! Group commit: concurrent enqueues share commits, and every one is durable when it returns.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use mailmux_core::{BodyFlags, Config, Envelope, Tenant, Tier};
use mailmux_queue::{Queue, Submission};
use mailmux_store::Store;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_enqueues_share_commits_and_are_all_durable() {
    let dir = std::env::temp_dir().join(format!("mailmux-queue-gc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::connect(&format!("sqlite://{}/q.db", dir.display()), 4)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let tenant = Tenant::new("t_gc".into(), "gc".into(), Tier::Enterprise, 0);
    store.create_tenant(&tenant, None).await.unwrap();
    let config = Config::default();
    let (queue, _jobs) = Queue::start(
        store.clone(),
        "node-gc".into(),
        &dir,
        &config.queue,
        &config.delivery,
        &mailmux_core::health::Health::default(),
    )
    .await
    .unwrap();

    const SESSIONS: usize = 50;
    let tasks: Vec<_> = (0..SESSIONS)
        .map(|i| {
            let queue: Arc<Queue> = queue.clone();
            tokio::spawn(async move {
                queue
                    .enqueue(Submission {
                        id: queue.next_id(),
                        tenant_id: "t_gc".into(),
                        envelope: Envelope {
                            mail_from: "a@gc.test".into(),
                            rcpt_to: vec![format!("r{i}@x.test")],
                            flags: BodyFlags::default(),
                        },
                        body: format!("Subject: {i}\r\n\r\nbody\r\n").into_bytes(),
                        origin: "smtp",
                        priority: 0,
                    })
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap());
    }
    // Durable when acknowledged: each one is in the store with its recipient.
    for id in &ids {
        assert_eq!(
            store.recipient_states(&id.0).await.unwrap().len(),
            1,
            "{id}"
        );
    }
    let stats = queue.commit_stats();
    let commits = stats.commits.load(Ordering::Relaxed);
    assert_eq!(stats.messages.load(Ordering::Relaxed), SESSIONS as u64);
    assert!(
        commits * 2 <= SESSIONS as u64,
        "{SESSIONS} concurrent enqueues took {commits} commits: fsyncs are not shared"
    );
    std::fs::remove_dir_all(&dir).ok();
}
