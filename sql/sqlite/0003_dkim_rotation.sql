-- DKIM key rotation (issue 4), SQLite flavour. sql/postgres/0003_dkim_rotation.sql is the same
-- schema in Postgres types: keep the two in step. Times are Unix milliseconds.
--
-- A domain now holds several keys, each in one state:
--   'active'   signs the domain's mail (at most one per domain);
--   'pending'  made by a rotation, waits until its DNS record is found, then becomes active
--              (at most one per domain);
--   'retiring' replaced by a newer key; its record must stay published until retire_at (mail
--              signed with it may still be in flight or re-verified), then the row is deleted.
-- SQLite cannot change a primary key in place: the table is rebuilt with (domain, selector) as
-- its key. Nothing references dkim_keys, so dropping the old table is safe.
CREATE TABLE dkim_keys_rotation (
    domain       TEXT NOT NULL REFERENCES domains(name) ON DELETE CASCADE,
    selector     TEXT NOT NULL,
    key_type     TEXT NOT NULL,                  -- 'rsa' or 'ed25519'
    public_key   TEXT NOT NULL,                  -- base64: the p= of the DKIM TXT record
    private_key  BLOB NOT NULL,                  -- sealed PKCS#8 DER
    created_at   INTEGER NOT NULL,
    status       TEXT NOT NULL DEFAULT 'active', -- 'active', 'pending' or 'retiring'
    activated_at INTEGER,                        -- when it started signing
    retire_at    INTEGER,                        -- 'retiring': listed until then
    updated_at   INTEGER NOT NULL DEFAULT 0,     -- last change of status
    PRIMARY KEY (domain, selector)
);
INSERT INTO dkim_keys_rotation (domain, selector, key_type, public_key, private_key, created_at,
                                status, activated_at, updated_at)
    SELECT domain, selector, key_type, public_key, private_key, created_at,
           'active', created_at, created_at
    FROM dkim_keys;
DROP TABLE dkim_keys;
ALTER TABLE dkim_keys_rotation RENAME TO dkim_keys;

-- One signing key per domain, one rotation in progress at a time: enforced by the database,
-- so two concurrent activations cannot both win.
CREATE UNIQUE INDEX dkim_keys_one_active ON dkim_keys (domain) WHERE status = 'active';
CREATE UNIQUE INDEX dkim_keys_one_pending ON dkim_keys (domain) WHERE status = 'pending';
-- The background checks look for pending keys and for retiring keys past their time.
CREATE INDEX dkim_keys_status ON dkim_keys (status, retire_at);
