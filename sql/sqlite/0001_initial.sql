-- mailmux schema, SQLite flavour. sql/postgres/0001_initial.sql is the same schema in
-- Postgres types: keep the two in step (same tables, columns, indexes, constraints).
-- Times are Unix milliseconds; booleans are 0/1 integers on both backends so one SQL text
-- serves both through sqlx's Any driver.

CREATE TABLE tenants (
    id                   TEXT PRIMARY KEY,
    name                 TEXT NOT NULL,
    tier                 TEXT NOT NULL,
    status               TEXT NOT NULL DEFAULT 'active',
    status_reason        TEXT,
    enabled              INTEGER NOT NULL DEFAULT 1,
    transport            TEXT,
    max_users            INTEGER NOT NULL,
    max_domains          INTEGER NOT NULL,
    max_storage_mb       INTEGER NOT NULL,
    max_messages_per_day INTEGER NOT NULL,
    features             TEXT NOT NULL,          -- JSON object of feature flags
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL
);

-- A domain belongs to exactly one tenant: the primary key is the (normalised) name.
CREATE TABLE domains (
    name               TEXT PRIMARY KEY,
    tenant_id          TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    verified           INTEGER NOT NULL DEFAULT 0,
    verified_by        TEXT,                     -- 'dns' or 'operator'
    verification_token TEXT NOT NULL,
    created_at         INTEGER NOT NULL
);
CREATE INDEX domains_tenant ON domains (tenant_id);

-- SMTP credentials: only a hash of the secret is kept.
CREATE TABLE credentials (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    username    TEXT NOT NULL UNIQUE,
    secret_hash TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE INDEX credentials_tenant ON credentials (tenant_id);

-- The queue. A row is written, with its body and recipients, in the same transaction as the
-- other messages of its group commit, before the client hears 250.
CREATE TABLE messages (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    mail_from       TEXT NOT NULL,               -- '' is the null sender
    flags           INTEGER NOT NULL,            -- bit 0: 8-bit body, bit 1: SMTPUTF8
    size            INTEGER NOT NULL,
    body            BLOB,                        -- NULL once every recipient is final
    status          TEXT NOT NULL,               -- 'queued' or 'done'
    origin          TEXT NOT NULL,               -- 'smtp', 'api' or 'dsn' (DSNs count against no quota)
    priority        INTEGER NOT NULL DEFAULT 0,  -- higher first when the queue is contended
    created_at      INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    lease_owner     TEXT,                        -- node delivering it now
    lease_until     INTEGER
);
CREATE INDEX messages_due ON messages (status, next_attempt_at);
CREATE INDEX messages_tenant_created ON messages (tenant_id, created_at);

CREATE TABLE recipients (
    message_id      TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    idx             INTEGER NOT NULL,
    address         TEXT NOT NULL,
    domain          TEXT NOT NULL,
    status          TEXT NOT NULL,               -- 'pending', 'delivered' or 'bounced'
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_reply      TEXT,
    last_attempt_at INTEGER,
    PRIMARY KEY (message_id, idx)
);

-- Every delivery attempt per recipient: the history an operator reads.
CREATE TABLE delivery_attempts (
    message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    idx        INTEGER NOT NULL,
    at         INTEGER NOT NULL,
    outcome    TEXT NOT NULL,                    -- 'delivered', 'deferred' or 'bounced'
    reply      TEXT NOT NULL
);
CREATE INDEX delivery_attempts_message ON delivery_attempts (message_id, at);
