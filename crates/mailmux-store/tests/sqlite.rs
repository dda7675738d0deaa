//! The storage suite on SQLite in a temp dir (Postgres runs it from the root tests/store.rs).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_suite_on_sqlite() {
    let dir = std::env::temp_dir().join(format!("mailmux-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let url = format!("sqlite://{}/nested/mailmux.db", dir.display());
    let store = mailmux_store::Store::connect(&url, 4).await.unwrap();
    store.migrate().await.unwrap();
    // Migrating twice is a no-op.
    store.migrate().await.unwrap();
    mailmux_store::suite::run_all(&store).await;
    store.close().await;
    std::fs::remove_dir_all(&dir).ok();
}
