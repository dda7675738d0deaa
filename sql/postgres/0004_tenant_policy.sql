-- Per-tenant sending policy (issue 4), Postgres flavour. sql/sqlite/0004_tenant_policy.sql is the
-- same schema in SQLite types: keep the two in step. 0 means unlimited, as for the other limits.

-- Sending limits per tenant. Existing tenants get their tier's defaults (mailmux-core's
-- Tier::default_limits), exactly as a tenant created now would.
ALTER TABLE tenants ADD COLUMN max_recipients_per_message BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tenants ADD COLUMN max_message_size BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tenants ADD COLUMN rate_per_second BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tenants ADD COLUMN rate_per_minute BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tenants ADD COLUMN max_connections BIGINT NOT NULL DEFAULT 0;
UPDATE tenants SET
    max_recipients_per_message = CASE tier WHEN 'free' THEN 50 WHEN 'starter' THEN 100
                                           WHEN 'professional' THEN 500 ELSE 0 END,
    max_message_size = CASE tier WHEN 'free' THEN 10485760 WHEN 'starter' THEN 26214400
                                 WHEN 'professional' THEN 52428800 ELSE 0 END,
    rate_per_second = CASE tier WHEN 'free' THEN 2 WHEN 'starter' THEN 20
                                WHEN 'professional' THEN 100 ELSE 0 END,
    rate_per_minute = CASE tier WHEN 'free' THEN 60 WHEN 'starter' THEN 600
                                WHEN 'professional' THEN 3000 ELSE 0 END,
    max_connections = CASE tier WHEN 'free' THEN 5 WHEN 'starter' THEN 20
                                WHEN 'professional' THEN 100 ELSE 0 END;

-- A credential may have its own sending rate on top of its tenant's; NULL: only the tenant's.
ALTER TABLE credentials ADD COLUMN rate_per_second BIGINT;
ALTER TABLE credentials ADD COLUMN rate_per_minute BIGINT;

-- Custom MAIL FROM (return-path) domain of a sending domain: a subdomain of it, used as the
-- envelope sender's domain at delivery while the tenant has the custom_domains feature.
ALTER TABLE domains ADD COLUMN return_path TEXT;
