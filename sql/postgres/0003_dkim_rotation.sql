-- DKIM key rotation (issue 4), Postgres flavour. sql/sqlite/0003_dkim_rotation.sql is the same
-- schema in SQLite types: keep the two in step. Times are Unix milliseconds.
--
-- A domain now holds several keys, each in one state:
--   'active'   signs the domain's mail (at most one per domain);
--   'pending'  made by a rotation, waits until its DNS record is found, then becomes active
--              (at most one per domain);
--   'retiring' replaced by a newer key; its record must stay published until retire_at (mail
--              signed with it may still be in flight or re-verified), then the row is deleted.
ALTER TABLE dkim_keys DROP CONSTRAINT dkim_keys_pkey;
ALTER TABLE dkim_keys ADD PRIMARY KEY (domain, selector);
ALTER TABLE dkim_keys ADD COLUMN status TEXT NOT NULL DEFAULT 'active'; -- 'active', 'pending' or 'retiring'
ALTER TABLE dkim_keys ADD COLUMN activated_at BIGINT;                    -- when it started signing
ALTER TABLE dkim_keys ADD COLUMN retire_at BIGINT;                       -- 'retiring': listed until then
ALTER TABLE dkim_keys ADD COLUMN updated_at BIGINT NOT NULL DEFAULT 0;   -- last change of status
UPDATE dkim_keys SET activated_at = created_at, updated_at = created_at;

-- One signing key per domain, one rotation in progress at a time: enforced by the database,
-- so two concurrent activations cannot both win.
CREATE UNIQUE INDEX dkim_keys_one_active ON dkim_keys (domain) WHERE status = 'active';
CREATE UNIQUE INDEX dkim_keys_one_pending ON dkim_keys (domain) WHERE status = 'pending';
-- The background checks look for pending keys and for retiring keys past their time.
CREATE INDEX dkim_keys_status ON dkim_keys (status, retire_at);
