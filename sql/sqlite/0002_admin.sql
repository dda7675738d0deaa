-- Admin API (issue 3), SQLite flavour. sql/postgres/0002_admin.sql is the same schema in
-- Postgres types: keep the two in step. Times are Unix milliseconds, booleans 0/1 integers.

-- Tenant-scoped bearer keys for the REST API. Only a SHA-256 of the secret is kept (the secret
-- has 256 bits of entropy, so a fast hash suffices); the key is shown once, at creation.
CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, created_at);

-- One DKIM key per domain, generated when the domain is added. The private key (PKCS#8 DER)
-- is sealed with AES-256-GCM under <data_dir>/master.key; the domain and selector are the
-- associated data, so a sealed key copied onto another row does not open.
CREATE TABLE dkim_keys (
    domain      TEXT PRIMARY KEY REFERENCES domains(name) ON DELETE CASCADE,
    selector    TEXT NOT NULL,
    key_type    TEXT NOT NULL,                -- 'rsa' or 'ed25519'
    public_key  TEXT NOT NULL,                -- base64: the p= of the DKIM TXT record
    private_key BLOB NOT NULL,                -- sealed PKCS#8 DER
    created_at  INTEGER NOT NULL
);

-- The last DNS check of a domain's records: per-record status as a JSON object.
CREATE TABLE domain_checks (
    domain     TEXT PRIMARY KEY REFERENCES domains(name) ON DELETE CASCADE,
    statuses   TEXT NOT NULL,                 -- {"verification": "verified", "dkim": "missing", ...}
    checked_at INTEGER NOT NULL,
    flagged_at INTEGER                        -- a re-check found a required record gone
);

-- Every change made through the REST API or the CLI. No foreign key on tenant_id: the log
-- outlives the tenant it speaks of (deleting a tenant is itself logged).
CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    actor       TEXT NOT NULL,                -- 'operator', 'api_key:<id>', 'cli', 'system'
    tenant_id   TEXT,
    action      TEXT NOT NULL,                -- e.g. 'tenant.update', 'domain.add'
    target      TEXT NOT NULL,
    before_json TEXT,
    after_json  TEXT
);
CREATE INDEX audit_log_tenant ON audit_log (tenant_id, id);

-- The admin API lists a tenant's messages newest first (queue ids sort by time).
CREATE INDEX messages_tenant_id ON messages (tenant_id, id);
