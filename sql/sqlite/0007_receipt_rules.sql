-- Receipt rules and stored inbound mail (issue 14), SQLite flavour. sql/postgres/0007_receipt_rules.sql
-- is the same schema in Postgres types: keep the two in step. Times are Unix milliseconds.

-- What the MX does with mail for an address of an inbound domain. `local_part` is lowercase, or
-- '*' for the domain's catch-all; an individual rule wins over the catch-all (mixed mode). One
-- rule per address: the unique key is what makes the precedence unambiguous.
CREATE TABLE receipt_rules (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    domain      TEXT NOT NULL REFERENCES domains(name) ON DELETE CASCADE,
    local_part  TEXT NOT NULL,
    action      TEXT NOT NULL,                -- 'store' or 'reject'
    reject_text TEXT,                         -- the 550's text for 'reject'
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    UNIQUE (domain, local_part)
);
CREATE INDEX receipt_rules_tenant ON receipt_rules (tenant_id, created_at);

-- Mail kept by a 'store' rule (or for postmaster@ a tenant domain), one row per message and
-- tenant. The row is written, and committed, before the MX answers 250: this commit is what
-- makes an inbound message durable. `raw` is the exact bytes as accepted (with our trace
-- headers in front), so `…/inbound/{id}/raw` returns them byte for byte.
CREATE TABLE inbound_messages (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    mail_from   TEXT NOT NULL,
    recipients  TEXT NOT NULL,                -- JSON: [{"address", "rule_id", "tag"}]
    size        INTEGER NOT NULL,
    raw         BLOB NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE INDEX inbound_messages_tenant ON inbound_messages (tenant_id, id);
CREATE INDEX inbound_messages_received ON inbound_messages (received_at);
