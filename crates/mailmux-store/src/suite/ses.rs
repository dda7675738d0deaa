//! SES provisioning state: the SES tenant record, step states (a no-op re-run keeps their
//! dates), identities kept only while their domain exists, and the pause SES causes (lifted
//! only if it is still SES's).

use mailmux_core::{Domain, ReputationPolicy, TenantStatus, Tier};

use super::new_tenant;
use crate::{SesIdentity, SesTenantRecord, Store};

pub(super) async fn ses_state(store: &Store) {
    let mut tenant = new_tenant(Tier::Starter);
    tenant.reputation_policy = ReputationPolicy::Strict;
    store.create_tenant(&tenant, None).await.unwrap();
    let read = store.get_tenant(&tenant.id).await.unwrap().unwrap();
    assert_eq!(read.reputation_policy, ReputationPolicy::Strict);

    let record = SesTenantRecord {
        tenant_id: tenant.id.clone(),
        tenant_name: format!("mm-{}", tenant.id),
        aws_tenant_id: Some("tn-1".into()),
        tenant_arn: Some("arn:aws:ses:us-east-1:000000000000:tenant/x/tn-1".into()),
        sending_status: Some("ENABLED".into()),
        paused_by_ses: false,
        failures: 0,
        next_sync_at: 5_000,
        synced_at: Some(1_000),
        updated_at: 1_000,
    };
    store.put_ses_tenant(&record).await.unwrap();
    assert_eq!(
        store.get_ses_tenant(&tenant.id).await.unwrap(),
        Some(record.clone())
    );
    let due: Vec<String> = store
        .list_ses_tenants_due(5_000, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.tenant_id)
        .collect();
    assert!(due.contains(&tenant.id));
    // Asking for a sync moves it forward, never back, and keeps the rest of the record.
    let name = record.tenant_name.clone();
    store
        .request_ses_sync(&tenant.id, &name, 2_000)
        .await
        .unwrap();
    store
        .request_ses_sync(&tenant.id, &name, 9_000)
        .await
        .unwrap();
    let next = store.get_ses_tenant(&tenant.id).await.unwrap().unwrap();
    assert_eq!(next.next_sync_at, 2_000);
    assert_eq!(next.aws_tenant_id, record.aws_tenant_id);
    // A tenant with no record yet gets one, due at once.
    let other = new_tenant(Tier::Starter);
    store.create_tenant(&other, None).await.unwrap();
    store
        .request_ses_sync(&other.id, "mm-other", 3_000)
        .await
        .unwrap();
    let created = store.get_ses_tenant(&other.id).await.unwrap().unwrap();
    assert_eq!((created.next_sync_at, created.synced_at), (3_000, None));
    assert_eq!(created.aws_tenant_id, None);

    // Steps: an error is dated when it happens; a step done again keeps its first date.
    store
        .set_ses_step(&tenant.id, "tenant", None, 10)
        .await
        .unwrap();
    store
        .set_ses_step(&tenant.id, "configuration_set", Some("500 boom"), 10)
        .await
        .unwrap();
    store
        .set_ses_step(&tenant.id, "tenant", None, 20)
        .await
        .unwrap();
    store
        .set_ses_step(&tenant.id, "configuration_set", None, 30)
        .await
        .unwrap();
    let steps = store.list_ses_steps(&tenant.id).await.unwrap();
    let step = |name: &str| steps.iter().find(|s| s.step == name).unwrap().clone();
    assert_eq!(
        (step("tenant").status.as_str(), step("tenant").updated_at),
        ("done", 10)
    );
    assert_eq!(step("configuration_set").updated_at, 30);
    assert_eq!(step("configuration_set").last_error, None);

    // Identities exist only beside their domain.
    let identity = SesIdentity {
        domain: format!("{}.ses.test", tenant.id.replace('_', "-")),
        tenant_id: tenant.id.clone(),
        dkim_tokens: vec!["a".into(), "b".into(), "c".into()],
        dkim_status: Some("PENDING".into()),
        verified_for_sending: false,
        mail_from_status: None,
        checked_at: 1,
    };
    store.put_ses_identity(&identity).await.unwrap();
    assert_eq!(
        store.get_ses_identity(&identity.domain).await.unwrap(),
        None
    );
    store
        .add_domain(&Domain {
            name: identity.domain.clone(),
            tenant_id: tenant.id.clone(),
            verified: true,
            verified_by: Some("operator".into()),
            verification_token: "tok".into(),
            created_at: 1,
            inbound: false,
            dmarc_reject: false,
        })
        .await
        .unwrap();
    store.put_ses_identity(&identity).await.unwrap();
    assert_eq!(
        store.get_ses_identity(&identity.domain).await.unwrap(),
        Some(identity.clone())
    );

    // SES's pause: set on an active tenant, lifted while it is still SES's.
    assert!(
        store
            .pause_tenant_for_ses(&tenant.id, "SES: review", 50, None)
            .await
            .unwrap()
    );
    let paused = store.get_tenant(&tenant.id).await.unwrap().unwrap();
    assert_eq!(paused.status, TenantStatus::Paused);
    assert_eq!(paused.status_reason.as_deref(), Some("SES: review"));
    assert!(
        store
            .get_ses_tenant(&tenant.id)
            .await
            .unwrap()
            .unwrap()
            .paused_by_ses
    );
    assert!(
        store
            .resume_tenant_from_ses(&tenant.id, 60, None)
            .await
            .unwrap()
    );
    assert_eq!(
        store.get_tenant(&tenant.id).await.unwrap().unwrap().status,
        TenantStatus::Active
    );
    // An operator's pause is never SES's to lift.
    let mut by_operator = store.get_tenant(&tenant.id).await.unwrap().unwrap();
    by_operator.status = TenantStatus::Paused;
    by_operator.status_reason = Some("operator".into());
    store.update_tenant(&by_operator, None).await.unwrap();
    assert!(
        !store
            .pause_tenant_for_ses(&tenant.id, "SES", 70, None)
            .await
            .unwrap()
    );
    assert!(
        !store
            .resume_tenant_from_ses(&tenant.id, 80, None)
            .await
            .unwrap()
    );
    let still = store.get_tenant(&tenant.id).await.unwrap().unwrap();
    assert_eq!(still.status_reason.as_deref(), Some("operator"));
}
