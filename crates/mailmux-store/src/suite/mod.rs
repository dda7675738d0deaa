//! The storage test suite: one body of checks, run against every backend (SQLite in a temp
//! dir by this crate's tests, Postgres by the root `tests/store.rs`). Compiled only for tests
//! and for the `test-suite` feature so the root package can call it. The checks are grouped by
//! what they cover: `tenants.rs`, `dkim.rs`, `queue.rs`, `policy.rs`, `inbound.rs`, `ses.rs`,
//! `webhooks.rs`; the fixtures they share are here.

mod dkim;
mod inbound;
mod policy;
mod queue;
mod ses;
mod tenants;
mod webhooks;

use std::sync::Arc;

use mailmux_core::credential::{hash_secret, random_id};
use mailmux_core::queued::NewMessage;
use mailmux_core::{BodyFlags, Credential, Domain, Envelope, QueueId, Tenant, Tier};
use sqlx::Executor;

use crate::{Backend, DkimKey, DkimKeyStatus, Store};

/// Runs every check against `store` (freshly migrated, empty or not: ids are random).
pub async fn run_all(store: &Store) {
    tenants::tenants(store).await;
    tenants::domains_and_credentials(store).await;
    dkim::dkim_rotation(store).await;
    queue::queue_lifecycle(store).await;
    queue::concurrent_claims_never_overlap(store).await;
    queue::journaled_deliveries_are_recorded_after_a_restart(store).await;
    policy::tenant_policy(store).await;
    queue::daily_quota_is_decided_in_the_commit(store).await;
    queue::spooled_bodies_are_pointed_at_then_freed(store).await;
    tenants::user_and_domain_limits_hold_under_concurrency(store).await;
    tenants::audit_entries_commit_with_their_change(store).await;
    inbound::receipt_rules_and_inbound_mail(store).await;
    webhooks::webhooks_and_deliveries(store).await;
    webhooks::concurrent_delivery_claims_never_overlap(store).await;
    inbound::srs_secret_is_shared(store).await;
    inbound::postmaster_mailbox(store).await;
    ses::ses_state(store).await;
}

/// From now on the database refuses audit entries whose action is `action`, as a full disk or
/// a lost connection would refuse them: for tests that a change whose entry cannot be written
/// is undone. [`accept_audit_entries`] lifts it.
///
/// A trigger made once refuses the actions listed in a table: the schema is not changed again
/// afterwards (another pooled SQLite connection could still see the old schema and say that a
/// trigger dropped meanwhile "already exists").
pub async fn refuse_audit_entries(store: &Store, action: &str) {
    let setup = match store.backend() {
        Backend::Sqlite => {
            "CREATE TABLE IF NOT EXISTS refused_audit_actions (action TEXT PRIMARY KEY); \
             CREATE TRIGGER IF NOT EXISTS refuse_audit BEFORE INSERT ON audit_log \
             WHEN NEW.action IN (SELECT action FROM refused_audit_actions) \
             BEGIN SELECT RAISE(ABORT, 'audit log refused'); END"
        }
        Backend::Postgres => {
            "CREATE TABLE IF NOT EXISTS refused_audit_actions (action TEXT PRIMARY KEY); \
             CREATE OR REPLACE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN IF NEW.action IN (SELECT action FROM refused_audit_actions) THEN \
             RAISE EXCEPTION 'audit log refused'; END IF; RETURN NEW; END $$; \
             CREATE OR REPLACE TRIGGER refuse_audit BEFORE INSERT ON audit_log \
             FOR EACH ROW EXECUTE FUNCTION refuse_audit()"
        }
    };
    store.pool.execute(setup).await.unwrap();
    sqlx::query("INSERT INTO refused_audit_actions (action) VALUES ($1)")
        .bind(action)
        .execute(&store.pool)
        .await
        .unwrap();
}

/// Undoes [`refuse_audit_entries`].
pub async fn accept_audit_entries(store: &Store) {
    sqlx::query("DELETE FROM refused_audit_actions")
        .execute(&store.pool)
        .await
        .unwrap();
}

fn new_tenant(tier: Tier) -> Tenant {
    Tenant::new(random_id("t_", 16), "acme".into(), tier, 1_000)
}

/// A verified inbound domain of `tenant_id`.
fn inbound_domain(tenant_id: &str, name: &str) -> Domain {
    Domain {
        name: name.to_string(),
        tenant_id: tenant_id.to_string(),
        verified: true,
        verified_by: Some("operator".into()),
        verification_token: "tok".into(),
        created_at: 1,
        inbound: true,
        dmarc_reject: false,
    }
}

fn new_credential(tenant_id: &str) -> Credential {
    Credential {
        id: random_id("c_", 16),
        tenant_id: tenant_id.to_string(),
        username: random_id("mm_", 20),
        secret_hash: hash_secret("pw"),
        created_at: 1,
        revoked_at: None,
        rate_per_second: None,
        rate_per_minute: None,
    }
}

fn dkim_key(domain: &str, selector: &str, status: DkimKeyStatus, at: i64) -> DkimKey {
    DkimKey {
        domain: domain.into(),
        selector: selector.into(),
        key_type: "ed25519".into(),
        public_key: format!("pub-{selector}"),
        private_key_sealed: selector.as_bytes().to_vec(),
        created_at: at,
        status,
        activated_at: (status == DkimKeyStatus::Active).then_some(at),
        retire_at: None,
        updated_at: at,
    }
}

fn message(tenant: &str, rcpts: &[&str], created_at: i64) -> NewMessage {
    NewMessage {
        id: QueueId(random_id("", 20)),
        tenant_id: tenant.into(),
        envelope: Envelope {
            mail_from: "app@acme.test".into(),
            rcpt_to: rcpts.iter().map(|r| r.to_string()).collect(),
            flags: BodyFlags {
                eight_bit: true,
                smtputf8: false,
            },
        },
        body: Arc::new(b"Subject: hi\r\n\r\n\xc3\xa9t\xc3\xa9\r\n".to_vec()),
        body_path: None,
        origin: "smtp",
        priority: 0,
        created_at,
        lease: None,
    }
}
