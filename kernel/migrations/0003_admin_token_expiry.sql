-- Operator and auditor tokens expire and can be listed and revoked by a short id. Tokens made
-- before this migration expire 12 hours after they were made, as new ones do by default.

ALTER TABLE admin_tokens ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY UNIQUE;
ALTER TABLE admin_tokens ADD COLUMN expires_at timestamptz;
UPDATE admin_tokens SET expires_at = created_at + interval '12 hours';
ALTER TABLE admin_tokens ALTER COLUMN expires_at SET NOT NULL;
ALTER TABLE admin_tokens ADD COLUMN revoked_by text;
