-- Webhooks (issue 14), Postgres flavour. sql/sqlite/0008_webhooks.sql is the same schema in
-- the other database's types: keep the two in step. Times are Unix milliseconds.

-- A tenant's HTTP endpoint. `kind` 'inbound' takes mail of webhook receipt rules, 'events'
-- delivery events (`event_types`, a JSON array; empty = all). The secret is sealed with the
-- master key (as DKIM private keys are), bound to the endpoint's id; during a rotation the
-- previous secret keeps signing beside the new one until `previous_secret_expires_at`.
CREATE TABLE webhooks (
    id                        TEXT PRIMARY KEY,
    tenant_id                 TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    url                       TEXT NOT NULL,
    kind                      TEXT NOT NULL,            -- 'inbound' or 'events'
    event_types               TEXT NOT NULL,            -- JSON array of strings
    secret_sealed             BYTEA NOT NULL,
    previous_secret_sealed    BYTEA,
    previous_secret_expires_at BIGINT,
    enabled                   BIGINT NOT NULL,
    created_at                BIGINT NOT NULL,
    updated_at                BIGINT NOT NULL
);
CREATE INDEX webhooks_tenant ON webhooks (tenant_id, created_at);

-- One hand-off of one payload to one endpoint. `id` is the `webhook-id` header: the same on
-- every attempt, so a receiver can drop duplicates. The payload is built (and committed) when
-- the message is accepted, in the same transaction as the message itself: a crash after the
-- MX's 250 still delivers it. `retry_from` starts the retry window (creation, or a replay);
-- past `webhooks.max_age_secs` of it a failing delivery is dead. A lease (`lease_owner`,
-- `lease_until`) gives an attempt to one node; an expired lease makes it due again.
CREATE TABLE webhook_deliveries (
    id              TEXT PRIMARY KEY,
    webhook_id      TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    event_type      TEXT NOT NULL,
    message_id      TEXT,                                -- the inbound message, if any
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL,                       -- 'pending', 'delivered' or 'dead'
    attempts        BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    retry_from      BIGINT NOT NULL,
    lease_owner     TEXT,
    lease_until     BIGINT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    finished_at     BIGINT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (webhook_id, created_at);

-- Every attempt of a delivery: when, the HTTP status (NULL when none came back) or the error,
-- and how long it took.
CREATE TABLE webhook_attempts (
    delivery_id TEXT NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
    attempt     BIGINT NOT NULL,
    at          BIGINT NOT NULL,
    status_code BIGINT,
    error       TEXT,
    duration_ms BIGINT NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);

-- A 'webhook' receipt rule names its endpoint. No ON DELETE action: deleting an endpoint a rule
-- still uses is refused (the API answers 409 naming the rules), so mail is never accepted for
-- a rule whose endpoint is gone.
ALTER TABLE receipt_rules ADD COLUMN webhook_id TEXT REFERENCES webhooks(id);

-- The SPF, DKIM, DMARC and ARC verdicts of a stored message (JSON), for its webhook payload and
-- its parsed view; NULL when the checks were off.
ALTER TABLE inbound_messages ADD COLUMN verdicts TEXT;
