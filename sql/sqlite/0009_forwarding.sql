-- Forwarding, lists and per-tenant retention (issue 14), SQLite flavour. sql/postgres/0009_forwarding.sql
-- is the same schema in Postgres types: keep the two in step. Times are Unix milliseconds.

-- A 'forward' rule's destinations and a 'list' rule's members: JSON arrays of addresses (NULL for
-- the other actions). Columns rather than a side table: a rule is read whole at RCPT, in the one
-- query that finds it.
ALTER TABLE receipt_rules ADD COLUMN forward_to TEXT;
ALTER TABLE receipt_rules ADD COLUMN members TEXT;

-- Days a tenant's stored inbound mail is kept; 0 = the relay's inbound.retention_days.
ALTER TABLE tenants ADD COLUMN inbound_retention_days INTEGER NOT NULL DEFAULT 0;

-- The SRS secret (HMAC key of the Sender Rewriting Scheme), one for the whole relay: every node
-- sharing this database must sign and verify SRS addresses with the same key, or a bounce coming
-- back through another node would be refused as forged. Sealed with the master key like DKIM
-- keys (key_vault.rs), so a database dump alone does not reveal it. The single row is created by
-- the first node that needs it (INSERT … ON CONFLICT DO NOTHING: concurrent nodes agree on one).
CREATE TABLE srs_secret (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    sealed     BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
