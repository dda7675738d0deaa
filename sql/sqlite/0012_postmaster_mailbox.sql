-- The operator's postmaster mailbox (issue 14), sqlite flavour; the other backend's 0012 is the same.
-- RFC 5321 §4.5.1: the MX must accept the bare `RCPT TO:<postmaster>`. With `inbound.postmaster`
-- set, such mail goes to that address (a tenant's, under its receipt rules); without it, it is kept
-- here for the operator (`GET /api/postmaster`, `mailmux postmaster list|show`) instead of being
-- refused. Written, and committed, before the MX answers 250; expired with inbound.retention_days.
CREATE TABLE postmaster_messages (
    id          TEXT PRIMARY KEY,
    mail_from   TEXT NOT NULL,
    size        INTEGER NOT NULL,
    raw         BLOB NOT NULL,
    received_at INTEGER NOT NULL,
    verdicts    TEXT
);
CREATE INDEX postmaster_messages_received ON postmaster_messages (received_at);
