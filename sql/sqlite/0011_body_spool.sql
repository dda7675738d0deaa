-- Queued bodies in the spool (issue 16), sqlite flavour; the other backend's 0011 is the same.
-- A message's body is written once, as a file of the queue's spool, before its row is committed;
-- the row then keeps only where it is (`<node id>/<queue id>`, relative to the spool directory)
-- and `body` stays NULL. Rows written before this migration keep their body in `body`.
ALTER TABLE messages ADD COLUMN body_path TEXT;
