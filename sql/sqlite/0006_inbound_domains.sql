-- Inbound MX (issue 14), SQLite flavour. sql/postgres/0006_inbound_domains.sql is the same schema
-- in Postgres types: keep the two in step.

-- Whether mailmux is the MX of the domain: RCPT on the MX listener is accepted for its addresses
-- (those a receipt rule matches) only while this is set, and the domain's records then list an MX.
-- Off by default, so that existing sending domains do not start receiving mail unasked.
ALTER TABLE domains ADD COLUMN inbound INTEGER NOT NULL DEFAULT 0;
-- Inbound mail whose DMARC check fails under the sender domain's p=reject is refused at the end
-- of DATA (550 5.7.1) when the tenant sets this on the receiving domain; otherwise it is accepted
-- with the failure in its Authentication-Results header.
ALTER TABLE domains ADD COLUMN dmarc_reject INTEGER NOT NULL DEFAULT 0;
