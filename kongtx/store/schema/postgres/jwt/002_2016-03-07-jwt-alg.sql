ALTER TABLE jwt_secrets ADD COLUMN IF NOT EXISTS algorithm text;
ALTER TABLE jwt_secrets ADD COLUMN IF NOT EXISTS rsa_public_key text;
