ALTER TABLE jwt_secrets ADD COLUMN algorithm TEXT;
ALTER TABLE jwt_secrets ADD COLUMN rsa_public_key TEXT;
