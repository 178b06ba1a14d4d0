-- Roles and grants for the vault strategy (docs/vault.md). Idempotent: run it again at will.
--
-- Run as the owner of the tables, after the tool has run once as that owner with
-- --strategy vault (which creates user_logins, user_logins_sqs_messages and pii_vault.*):
--
--   psql "postgres://owner@host/db" -v ON_ERROR_STOP=1 -f scripts/vault-roles.sql
--
-- It creates three group roles (NOLOGIN) and grants them only what each job needs; give
-- them to people and services with e.g.
--
--   CREATE ROLE loader_svc LOGIN PASSWORD '...' IN ROLE login_loader;
--   CREATE ROLE alice LOGIN PASSWORD '...' IN ROLE pii_recovery;
--
--   login_loader     loads rows: INSERT into the vault, never SELECT it
--   pii_recovery     scripts/recover.ts: reads the vault, appends to the audit log
--   pii_vault_admin  scripts/forget.ts and scripts/rotate-vault-key.ts
--
-- PUBLIC gets nothing in pii_vault. Nobody but the owner reads the audit log; it refuses
-- UPDATE, DELETE and TRUNCATE for everyone (a trigger), the owner included.

BEGIN;

DO $$
BEGIN
  IF to_regclass('pii_vault.entries') IS NULL OR to_regclass('pii_vault.audit') IS NULL
     OR to_regclass('user_logins') IS NULL OR to_regclass('user_logins_sqs_messages') IS NULL THEN
    RAISE EXCEPTION 'The tables do not exist yet: run the tool once as this owner with --strategy vault, then run this script again';
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'login_loader') THEN CREATE ROLE login_loader NOLOGIN; END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pii_recovery') THEN CREATE ROLE pii_recovery NOLOGIN; END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pii_vault_admin') THEN CREATE ROLE pii_vault_admin NOLOGIN; END IF;
END $$;

REVOKE ALL ON SCHEMA pii_vault FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA pii_vault FROM PUBLIC, login_loader, pii_recovery, pii_vault_admin;
REVOKE ALL ON FUNCTION pii_vault.refuse_audit_change() FROM PUBLIC;
GRANT USAGE ON SCHEMA pii_vault TO login_loader, pii_recovery, pii_vault_admin;

-- The loader: rows in, vault entries in. ON CONFLICT DO NOTHING needs no SELECT. The
-- keyring holds only the token key wrapped under VAULT_KEY; the loader unwraps it at start.
GRANT INSERT ON user_logins TO login_loader;
GRANT SELECT, INSERT, DELETE ON user_logins_sqs_messages TO login_loader;
GRANT INSERT ON pii_vault.entries TO login_loader;
GRANT SELECT ON pii_vault.keyring TO login_loader;

-- Recovery: read the vault and the rows that name the tokens; write audit rows, but only
-- the columns a caller may state: when, the database user and the client address are
-- filled in by the database.
GRANT SELECT ON pii_vault.entries, pii_vault.keyring, user_logins TO pii_recovery;
GRANT INSERT (action, reason, os_user, tokens, user_id, detail) ON pii_vault.audit TO pii_recovery;

-- Erasure and rotation: change and delete entries, mark erased rows, manage the keyring.
GRANT SELECT, UPDATE, DELETE ON pii_vault.entries TO pii_vault_admin;
GRANT SELECT, INSERT, DELETE ON pii_vault.keyring TO pii_vault_admin;
GRANT SELECT, UPDATE ON user_logins TO pii_vault_admin;
GRANT INSERT (action, reason, os_user, tokens, user_id, detail) ON pii_vault.audit TO pii_vault_admin;

COMMIT;
