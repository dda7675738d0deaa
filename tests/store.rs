//! The storage suite (crates/mailmux-store/src/suite.rs) on Postgres: a private cluster started
//! from Debian's binaries by the test setup. The same suite runs on SQLite in the store crate.

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_suite_on_postgres() {
    let Some(url) = common::postgres_url() else {
        return; // postgres_url() printed why (and panicked under CI=true).
    };
    let store = mailmux_store::Store::connect(&url, 4).await.unwrap();
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(store.backend(), mailmux_store::Backend::Postgres);
    mailmux_store::suite::run_all(&store).await;
    store.close().await;
}
