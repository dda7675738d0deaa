-- A return-path (custom MAIL FROM) domain is used only once its DNS records are found, SQLite
-- flavour. sql/postgres/0005_return_path_checks.sql is the same schema in Postgres types.
-- Changing the return path clears all three: the new domain has to be checked afresh.

-- {"mx": "verified", "spf": "missing"}, as the last check found them; NULL: never checked.
ALTER TABLE domains ADD COLUMN return_path_checks TEXT;
ALTER TABLE domains ADD COLUMN return_path_checked_at INTEGER;
-- Set when a check found the MX and SPF records; delivery puts the return path on the wire
-- only while it is set. A re-check that finds a record gone clears it again.
ALTER TABLE domains ADD COLUMN return_path_verified_at INTEGER;
