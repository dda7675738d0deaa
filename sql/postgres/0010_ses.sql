-- SES v2 relaying (issue 12), Postgres flavour. sql/sqlite/0010_ses.sql is the same schema
-- in SQLite types: keep the two in step.

-- How SES judges the tenant's reputation (UpdateReputationEntityPolicy): standard, strict, none.
ALTER TABLE tenants ADD COLUMN reputation_policy TEXT NOT NULL DEFAULT 'standard';

-- The id the next hop gave the message for this recipient (SES's MessageId); NULL for SMTP.
ALTER TABLE recipients ADD COLUMN remote_id TEXT;

-- A mailmux tenant's SES tenant: what SES answered, and when the next sync is due.
CREATE TABLE ses_tenants (
    tenant_id      TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    tenant_name    TEXT NOT NULL,
    aws_tenant_id  TEXT,                         -- SES's TenantId, once created
    tenant_arn     TEXT,                         -- its ARN: the account the associations name
    sending_status TEXT,                         -- ENABLED, REINSTATED or DISABLED, as last read
    -- 1 while mailmux holds the tenant paused because SES stopped its sending: only such a
    -- pause is lifted when SES enables it again, never one an operator set.
    paused_by_ses  BIGINT NOT NULL DEFAULT 0,
    failures       BIGINT NOT NULL DEFAULT 0,     -- failed syncs in a row (backoff)
    next_sync_at   BIGINT NOT NULL,
    synced_at      BIGINT,
    updated_at     BIGINT NOT NULL
);
CREATE INDEX ses_tenants_due ON ses_tenants (next_sync_at);

-- One row per provisioning step of a tenant ('tenant', 'configuration_set', 'identity:DOMAIN', …):
-- its state after the last run, so a failure is visible and a re-run knows what is done.
CREATE TABLE ses_steps (
    tenant_id  TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    step       TEXT NOT NULL,
    status     TEXT NOT NULL,                    -- 'done' or 'error'
    last_error TEXT,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, step)
);

-- A domain's SES email identity as SES last described it.
CREATE TABLE ses_identities (
    domain               TEXT PRIMARY KEY REFERENCES domains(name) ON DELETE CASCADE,
    tenant_id            TEXT NOT NULL,
    dkim_tokens          TEXT NOT NULL,          -- JSON array: Easy DKIM's three CNAME tokens
    dkim_status          TEXT,                   -- PENDING, SUCCESS, FAILED, TEMPORARY_FAILURE, NOT_STARTED
    verified_for_sending BIGINT NOT NULL DEFAULT 0,
    mail_from_status     TEXT,                   -- PENDING, SUCCESS, FAILED, TEMPORARY_FAILURE
    checked_at           BIGINT NOT NULL
);
