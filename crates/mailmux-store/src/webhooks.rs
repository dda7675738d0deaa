//! Webhook endpoints (`webhooks`), their deliveries (`webhook_deliveries`) and every attempt
//! (`webhook_attempts`). A delivery is written with what it delivers (the inbound message, in
//! [`Store::store_inbound_with_webhooks`]), then leased by one node at a time
//! ([`Store::claim_webhook_deliveries`]) and finished with the attempt's outcome
//! ([`Store::finish_webhook_attempt`]).

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use crate::audit::{commit_if_changed, commit_with_audit};
use crate::{AuditEntry, Backend, Result, Store, StoreError, bool_to_i64};

/// A tenant's endpoint. Secrets are sealed ([`crate::MasterKey::seal`]) under
/// [`Webhook::seal_context`]; the store never sees them in the clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub id: String,
    pub tenant_id: String,
    pub url: String,
    /// `inbound` or `events`.
    pub kind: String,
    pub event_types: Vec<String>,
    pub secret_sealed: Vec<u8>,
    /// The secret before the last rotation, still signing until `previous_secret_expires_at`.
    pub previous_secret_sealed: Option<Vec<u8>>,
    pub previous_secret_expires_at: Option<i64>,
    pub enabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Webhook {
    /// What an endpoint's secret is sealed with: a sealed secret copied to another endpoint's
    /// row does not open there.
    pub fn seal_context(id: &str) -> String {
        format!("webhook/{id}")
    }
}

/// A delivery to write (with the message it carries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWebhookDelivery {
    /// The `webhook-id` header: the same on every attempt.
    pub id: String,
    pub webhook_id: String,
    pub tenant_id: String,
    pub event_type: String,
    pub message_id: Option<String>,
    /// The JSON body, as signed and sent.
    pub payload: String,
    pub created_at: i64,
}

/// A delivery as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookDelivery {
    pub id: String,
    pub webhook_id: String,
    pub tenant_id: String,
    pub event_type: String,
    pub message_id: Option<String>,
    /// Empty in listings ([`Store::list_webhook_deliveries`]).
    pub payload: String,
    /// `pending`, `delivered` or `dead`.
    pub status: String,
    pub attempts: u32,
    pub next_attempt_at: i64,
    /// Start of the retry window (creation, or the last replay).
    pub retry_from: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

/// One attempt of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookAttempt {
    /// 1, 2, …
    pub attempt: u32,
    pub at: i64,
    /// The HTTP status, when one came back.
    pub status_code: Option<u16>,
    /// Why it failed without a status (connect, timeout, refused address…), or what a
    /// non-2xx meant.
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// What an attempt leaves a delivery as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    Delivered,
    /// Failed; tried again at this time.
    Retry(i64),
    Dead,
}

const WEBHOOK_COLUMNS: &str = "id, tenant_id, url, kind, event_types, secret_sealed, \
    previous_secret_sealed, previous_secret_expires_at, enabled, created_at, updated_at";

const DELIVERY_SUMMARY: &str = "id, webhook_id, tenant_id, event_type, message_id, status, \
    attempts, next_attempt_at, retry_from, last_error, created_at, finished_at";

impl Store {
    pub async fn create_webhook(
        &self,
        webhook: &Webhook,
        audit: Option<&AuditEntry>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(&format!(
            "INSERT INTO webhooks ({WEBHOOK_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        ))
        .bind(&webhook.id)
        .bind(&webhook.tenant_id)
        .bind(&webhook.url)
        .bind(&webhook.kind)
        .bind(event_types_json(&webhook.event_types))
        .bind(webhook.secret_sealed.as_slice())
        .bind(webhook.previous_secret_sealed.as_deref())
        .bind(webhook.previous_secret_expires_at)
        .bind(bool_to_i64(webhook.enabled))
        .bind(webhook.created_at)
        .bind(webhook.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| StoreError::conflict_or(e, format!("webhook {}", webhook.id)))?;
        commit_with_audit(tx, audit).await
    }

    /// Replaces an endpoint's URL, event types, secrets and `enabled`; `NotFound` when the
    /// tenant has no such endpoint.
    pub async fn update_webhook(
        &self,
        webhook: &Webhook,
        audit: Option<&AuditEntry>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE webhooks SET url = $3, event_types = $4, secret_sealed = $5, \
             previous_secret_sealed = $6, previous_secret_expires_at = $7, enabled = $8, \
             updated_at = $9 WHERE tenant_id = $1 AND id = $2",
        )
        .bind(&webhook.tenant_id)
        .bind(&webhook.id)
        .bind(&webhook.url)
        .bind(event_types_json(&webhook.event_types))
        .bind(webhook.secret_sealed.as_slice())
        .bind(webhook.previous_secret_sealed.as_deref())
        .bind(webhook.previous_secret_expires_at)
        .bind(bool_to_i64(webhook.enabled))
        .bind(webhook.updated_at)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("webhook {}", webhook.id)));
        }
        commit_with_audit(tx, audit).await
    }

    /// Deletes an endpoint with its deliveries; `InUse` (naming the rules) while a receipt rule
    /// still hands mail to it: the rule must go or change first, so mail is never accepted for
    /// an endpoint that no longer exists. Checked in the transaction that deletes, and the
    /// foreign key refuses it too.
    pub async fn delete_webhook(
        &self,
        tenant_id: &str,
        id: &str,
        audit: Option<&AuditEntry>,
    ) -> Result<bool> {
        let mut tx = self.begin_for_tenant(tenant_id).await?;
        let rules: Vec<String> = sqlx::query_scalar(
            "SELECT local_part || '@' || domain FROM receipt_rules WHERE webhook_id = $1 \
             ORDER BY domain, local_part",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        if !rules.is_empty() {
            return Err(StoreError::InUse(format!(
                "webhook {id} is used by the receipt rule(s) {}; change or delete them first",
                rules.join(", ")
            )));
        }
        let done = sqlx::query("DELETE FROM webhooks WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        commit_if_changed(tx, done.rows_affected() > 0, audit).await
    }

    pub async fn get_webhook(&self, tenant_id: &str, id: &str) -> Result<Option<Webhook>> {
        let row = sqlx::query(&format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| webhook_from_row(&row)).transpose()
    }

    /// A tenant's endpoints, oldest first.
    pub async fn list_webhooks(&self, tenant_id: &str) -> Result<Vec<Webhook>> {
        let rows = sqlx::query(&format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE tenant_id = $1 ORDER BY created_at, id"
        ))
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(webhook_from_row).collect()
    }

    /// Leases up to `limit` due deliveries of enabled endpoints to `owner` until `lease_until`,
    /// skipping the endpoints in `busy` (those with no free slot on this node). On Postgres
    /// several nodes claim at once: `FOR UPDATE OF d SKIP LOCKED` gives each row to one of
    /// them; SQLite has one writer, so the UPDATE is atomic as it is.
    pub async fn claim_webhook_deliveries(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: usize,
        busy: &[String],
    ) -> Result<Vec<WebhookDelivery>> {
        let lock = match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => "FOR UPDATE OF d SKIP LOCKED",
        };
        let skip = if busy.is_empty() {
            String::new()
        } else {
            let list = (5..busy.len() + 5)
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(", ");
            format!("AND d.webhook_id NOT IN ({list})")
        };
        let sql = format!(
            "UPDATE webhook_deliveries SET lease_owner = $1, lease_until = $2 \
             WHERE id IN ( \
               SELECT d.id FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id \
               WHERE d.status = 'pending' AND d.next_attempt_at <= $3 \
                 AND (d.lease_until IS NULL OR d.lease_until < $3) AND w.enabled = 1 {skip} \
               ORDER BY d.next_attempt_at LIMIT $4 {lock}) \
             RETURNING {DELIVERY_SUMMARY}, payload"
        );
        let mut query = sqlx::query(&sql)
            .bind(owner)
            .bind(lease_until)
            .bind(now)
            .bind(limit as i64);
        for id in busy {
            query = query.bind(id);
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| delivery_from_row(row, true))
            .collect()
    }

    /// Gives a lease back without an attempt (the endpoint had no free slot after all).
    pub async fn release_webhook_delivery(&self, id: &str, owner: &str) -> Result<()> {
        sqlx::query(
            "UPDATE webhook_deliveries SET lease_owner = NULL, lease_until = NULL \
             WHERE id = $1 AND lease_owner = $2",
        )
        .bind(id)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Gives back every lease `owner` holds (a node starting again after a crash: its
    /// deliveries in flight are due at once rather than when their leases run out).
    pub async fn release_webhook_leases(&self, owner: &str) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET lease_owner = NULL, lease_until = NULL \
             WHERE lease_owner = $1",
        )
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Records `attempt` and what it leaves the delivery as, in one transaction; only while
    /// `owner` still holds the lease (false otherwise: the lease ran out and another node took
    /// the delivery, whose own attempt counts instead).
    pub async fn finish_webhook_attempt(
        &self,
        id: &str,
        owner: &str,
        attempt: &WebhookAttempt,
        outcome: DeliveryOutcome,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let (status, next, finished) = match outcome {
            DeliveryOutcome::Delivered => ("delivered", attempt.at, Some(attempt.at)),
            DeliveryOutcome::Retry(at) => ("pending", at, None),
            DeliveryOutcome::Dead => ("dead", attempt.at, Some(attempt.at)),
        };
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET status = $3, attempts = $4, next_attempt_at = $5, \
             finished_at = $6, last_error = $7, lease_owner = NULL, lease_until = NULL \
             WHERE id = $1 AND lease_owner = $2",
        )
        .bind(id)
        .bind(owner)
        .bind(status)
        .bind(i64::from(attempt.attempt))
        .bind(next)
        .bind(finished)
        .bind(attempt.error.as_deref())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO webhook_attempts (delivery_id, attempt, at, status_code, error, \
             duration_ms) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(i64::from(attempt.attempt))
        .bind(attempt.at)
        .bind(attempt.status_code.map(i64::from))
        .bind(attempt.error.as_deref())
        .bind(attempt.duration_ms.min(i64::MAX as u64) as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Makes a delivery (pending, delivered or dead) due once more at `now`, with a new retry
    /// window; false when the endpoint has no such delivery.
    pub async fn replay_webhook_delivery(
        &self,
        tenant_id: &str,
        webhook_id: &str,
        id: &str,
        now: i64,
        audit: Option<&AuditEntry>,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $4, \
             retry_from = $4, finished_at = NULL, lease_owner = NULL, lease_until = NULL \
             WHERE tenant_id = $1 AND webhook_id = $2 AND id = $3",
        )
        .bind(tenant_id)
        .bind(webhook_id)
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        commit_if_changed(tx, done.rows_affected() > 0, audit).await
    }

    /// One delivery of an endpoint, with its payload.
    pub async fn get_webhook_delivery(
        &self,
        tenant_id: &str,
        webhook_id: &str,
        id: &str,
    ) -> Result<Option<WebhookDelivery>> {
        let row = sqlx::query(&format!(
            "SELECT {DELIVERY_SUMMARY}, payload FROM webhook_deliveries \
             WHERE tenant_id = $1 AND webhook_id = $2 AND id = $3"
        ))
        .bind(tenant_id)
        .bind(webhook_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| delivery_from_row(&row, true)).transpose()
    }

    /// An endpoint's deliveries newest first, `limit` of them after the `(created_at, id)`
    /// cursor `before`; without payloads.
    pub async fn list_webhook_deliveries(
        &self,
        tenant_id: &str,
        webhook_id: &str,
        before: Option<(i64, &str)>,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>> {
        let (at, id) = before.unwrap_or((i64::MAX, ""));
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_SUMMARY} FROM webhook_deliveries \
             WHERE tenant_id = $1 AND webhook_id = $2 \
               AND (created_at < $3 OR (created_at = $3 AND id < $4)) \
             ORDER BY created_at DESC, id DESC LIMIT $5"
        ))
        .bind(tenant_id)
        .bind(webhook_id)
        .bind(at)
        .bind(id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| delivery_from_row(row, false))
            .collect()
    }

    /// The attempts of a delivery, first first.
    pub async fn webhook_attempts(&self, delivery_id: &str) -> Result<Vec<WebhookAttempt>> {
        let rows = sqlx::query(
            "SELECT attempt, at, status_code, error, duration_ms FROM webhook_attempts \
             WHERE delivery_id = $1 ORDER BY attempt",
        )
        .bind(delivery_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(WebhookAttempt {
                    attempt: row.try_get::<i64, _>("attempt")?.max(0) as u32,
                    at: row.try_get("at")?,
                    status_code: row
                        .try_get::<Option<i64>, _>("status_code")?
                        .map(|c| c.clamp(0, 999) as u16),
                    error: row.try_get("error")?,
                    duration_ms: row.try_get::<i64, _>("duration_ms")?.max(0) as u64,
                })
            })
            .collect()
    }
}

/// Writes one delivery inside the caller's transaction (the inbound message's).
pub(crate) async fn insert_delivery(
    tx: &mut Transaction<'static, Any>,
    delivery: &NewWebhookDelivery,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, webhook_id, tenant_id, event_type, message_id, \
         payload, status, attempts, next_attempt_at, retry_from, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, $7, $7)",
    )
    .bind(&delivery.id)
    .bind(&delivery.webhook_id)
    .bind(&delivery.tenant_id)
    .bind(&delivery.event_type)
    .bind(delivery.message_id.as_deref())
    .bind(&delivery.payload)
    .bind(delivery.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn event_types_json(types: &[String]) -> String {
    serde_json::to_string(types).unwrap_or_else(|_| "[]".into())
}

fn webhook_from_row(row: &AnyRow) -> Result<Webhook> {
    let event_types: String = row.try_get("event_types")?;
    Ok(Webhook {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        url: row.try_get("url")?,
        kind: row.try_get("kind")?,
        event_types: serde_json::from_str(&event_types)
            .map_err(|e| StoreError::Corrupt(format!("webhook event_types: {e}")))?,
        secret_sealed: row.try_get("secret_sealed")?,
        previous_secret_sealed: row.try_get("previous_secret_sealed")?,
        previous_secret_expires_at: row.try_get("previous_secret_expires_at")?,
        enabled: row.try_get::<i64, _>("enabled")? != 0,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn delivery_from_row(row: &AnyRow, with_payload: bool) -> Result<WebhookDelivery> {
    Ok(WebhookDelivery {
        id: row.try_get("id")?,
        webhook_id: row.try_get("webhook_id")?,
        tenant_id: row.try_get("tenant_id")?,
        event_type: row.try_get("event_type")?,
        message_id: row.try_get("message_id")?,
        payload: if with_payload {
            row.try_get("payload")?
        } else {
            String::new()
        },
        status: row.try_get("status")?,
        attempts: row.try_get::<i64, _>("attempts")?.max(0) as u32,
        next_attempt_at: row.try_get("next_attempt_at")?,
        retry_from: row.try_get("retry_from")?,
        last_error: row.try_get("last_error")?,
        created_at: row.try_get("created_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}
