-- Roles and grants for the vault strategy (docs/vault.md). Idempotent: run it again at will.
--
-- Run as the owner of the tables, after the tool has run once as that owner with
-- --strategy vault (which creates user_logins, user_logins_sqs_messages, its prune
-- function, user_logins_mask with the mask recorded, and pii_vault.*). The owner needs
-- CREATEROLE (or be a superuser):
--
--   psql "postgres://owner@host/db" -v ON_ERROR_STOP=1 -f scripts/vault-roles.sql
--
-- 1. The vault's tables and functions are handed to pii_vault_owner_<database>, a role
--    nobody logs in as, made for this database alone: a role that owns SECURITY DEFINER
--    functions in several databases would let whoever may act as it (SET ROLE) act as the
--    vault's owner in all of them. It owns the schema and everything in it; only it reads
--    ciphertexts; everyone else calls functions that run as it. The account that runs this script ends with ADMIN on that role only
--    (not membership): taking its powers would take a visible GRANT.
-- 2. Three group roles (NOLOGIN, shared by the cluster's databases) get only what each job
--    needs, in this database; give them to people and services with e.g.
--
--      CREATE ROLE loader_svc LOGIN PASSWORD '...' IN ROLE login_loader;
--      CREATE ROLE alice LOGIN PASSWORD '...' IN ROLE pii_recovery;
--
--      login_loader     loads rows: pii_vault.write_entries, which reveals nothing; the
--                       ledger's ids in, and out only past SQS's retention. Its service
--                       holds VAULT_TOKEN_KEY and VAULT_RECOVERY_PUBLIC_KEY
--      pii_recovery     recover: request_recovery, then serve_recovery. Its people hold
--                       VAULT_RECOVERY_KEY, never VAULT_TOKEN_KEY
--      pii_vault_admin  forget and rotate-vault-key
--
-- PUBLIC gets nothing in pii_vault. The audit log is written only by the functions, and
-- refuses UPDATE, DELETE and TRUNCATE for everyone (a trigger), its owner included.

BEGIN;

DO $$
DECLARE
  owner_role text := 'pii_vault_owner_' || current_database();
  found_role pg_roles;
BEGIN
  -- The schema, not its tables: once the vault's owner holds it, this role reads inside it
  -- only as that owner (below).
  IF to_regnamespace('pii_vault') IS NULL OR to_regclass('user_logins') IS NULL
     OR to_regclass('user_logins_sqs_messages') IS NULL OR to_regprocedure('user_logins_sqs_messages_prune()') IS NULL
     OR to_regclass('user_logins_mask') IS NULL THEN
    RAISE EXCEPTION 'The tables do not exist yet: run the tool once as this owner with --strategy vault, then run this script again';
  END IF;
  IF obj_description('pii_vault'::regnamespace, 'pg_namespace') IS DISTINCT FROM 'sqs-login-masker vault 3' THEN
    RAISE EXCEPTION 'pii_vault was made by an earlier version of the tool (the single VAULT_KEY, or older): see docs/vault.md';
  END IF;
  -- Role names are at most 63 bytes: a long database name gets a digest instead.
  IF octet_length(owner_role) > 63 THEN
    owner_role := 'pii_vault_owner_' || left(md5(current_database()), 24);
  END IF;
  -- Another database may create the shared roles at the same moment: theirs is as good.
  BEGIN CREATE ROLE login_loader NOLOGIN; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END;
  BEGIN CREATE ROLE pii_recovery NOLOGIN; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END;
  BEGIN CREATE ROLE pii_vault_admin NOLOGIN; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END;
  BEGIN EXECUTE format('CREATE ROLE %I NOLOGIN', owner_role); EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END;
  SELECT * INTO found_role FROM pg_roles WHERE rolname = owner_role;
  IF found_role.rolcanlogin OR found_role.rolsuper OR found_role.rolbypassrls THEN
    RAISE EXCEPTION 'Role % exists and may log in or bypass privileges: the vault''s owner must be a plain NOLOGIN role', owner_role;
  END IF;
  EXECUTE format('COMMENT ON ROLE %I IS %L', owner_role, 'owns pii_vault in database ' || current_database() || '; nobody logs in as it');
  -- Handing objects over needs the right to SET ROLE to the new owner (membership before
  -- Postgres 16, where ADMIN alone counts as membership but not as SET); held only for this transaction.
  IF NOT pg_has_role(current_user, owner_role,
                     CASE WHEN current_setting('server_version_num')::int >= 160000 THEN 'SET' ELSE 'MEMBER' END) THEN
    EXECUTE format('GRANT %I TO %I', owner_role, current_user);
    PERFORM set_config('vault_roles.revoke_owner_from', current_user, true);
  END IF;
  PERFORM set_config('vault_roles.owner', owner_role, true);
  IF to_regclass('pii_vault.entries') IS NULL THEN
    RAISE EXCEPTION 'The tables do not exist yet: run the tool once as this owner with --strategy vault, then run this script again';
  END IF;
  -- The schema too: its owner may drop or replace anything in it without a GRANT. Handing it
  -- over wants the new owner to hold CREATE on the database: lent for this transaction only.
  IF (SELECT n.nspowner FROM pg_namespace n WHERE n.nspname = 'pii_vault') <> (SELECT r.oid FROM pg_roles r WHERE r.rolname = owner_role) THEN
    IF NOT has_database_privilege(owner_role, current_database(), 'CREATE') THEN
      EXECUTE format('GRANT CREATE ON DATABASE %I TO %I', current_database(), owner_role);
      IF NOT has_database_privilege(owner_role, current_database(), 'CREATE') THEN
        RAISE EXCEPTION 'To hand schema pii_vault to %, this role must be able to grant CREATE on database %: run this as the database''s owner, or have it GRANT CREATE ON DATABASE % TO % WITH GRANT OPTION',
          owner_role, current_database(), current_database(), current_user;
      END IF;
      EXECUTE format('ALTER SCHEMA pii_vault OWNER TO %I', owner_role);
      EXECUTE format('REVOKE CREATE ON DATABASE %I FROM %I', current_database(), owner_role);
    ELSE
      EXECUTE format('ALTER SCHEMA pii_vault OWNER TO %I', owner_role);
    END IF;
  END IF;
  EXECUTE format('GRANT USAGE, CREATE ON SCHEMA pii_vault TO %I', owner_role);
  EXECUTE (SELECT string_agg(format('ALTER TABLE %s OWNER TO %I', c.oid::regclass, owner_role), '; ')
           FROM pg_class c WHERE c.relnamespace = 'pii_vault'::regnamespace AND c.relkind IN ('r', 'p'));
  EXECUTE (SELECT string_agg(format('ALTER FUNCTION %s OWNER TO %I', p.oid::regprocedure, owner_role), '; ')
           FROM pg_proc p WHERE p.pronamespace = 'pii_vault'::regnamespace);
  EXECUTE format('REVOKE CREATE ON SCHEMA pii_vault FROM %I', owner_role);
  -- forget_user erases the user's masked columns.
  EXECUTE format('GRANT SELECT (user_id, masked_ip, masked_device_id), UPDATE (masked_ip, masked_device_id) ON user_logins TO %I', owner_role);
END $$;

-- Start from nothing: grants of an earlier version of this script go too.
REVOKE ALL ON SCHEMA pii_vault FROM PUBLIC, login_loader, pii_recovery, pii_vault_admin;
REVOKE ALL ON ALL TABLES IN SCHEMA pii_vault FROM PUBLIC, login_loader, pii_recovery, pii_vault_admin;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pii_vault FROM PUBLIC, login_loader, pii_recovery, pii_vault_admin;
REVOKE ALL ON user_logins, user_logins_sqs_messages, user_logins_mask FROM login_loader, pii_recovery, pii_vault_admin;
REVOKE ALL ON FUNCTION user_logins_sqs_messages_prune() FROM PUBLIC;
GRANT USAGE ON SCHEMA pii_vault TO login_loader, pii_recovery, pii_vault_admin;
-- The keyring holds only the recovery key pair's public halves: they seal, they open nothing.
GRANT SELECT ON pii_vault.keyring TO login_loader, pii_recovery, pii_vault_admin;

-- The loader: rows in; ledger ids in, and out only through the prune function; vault
-- entries in through a function that answers nothing; the table's recorded mask, read.
GRANT INSERT ON user_logins TO login_loader;
GRANT SELECT ON user_logins_mask TO login_loader;
GRANT SELECT, INSERT ON user_logins_sqs_messages TO login_loader;
GRANT EXECUTE ON FUNCTION user_logins_sqs_messages_prune() TO login_loader;
GRANT EXECUTE ON FUNCTION pii_vault.write_entries(integer, text[], text[], bytea[]) TO login_loader;

-- Recovery: find a user's tokens in user_logins; ask, then (after committing) be served.
GRANT SELECT ON user_logins TO pii_recovery;
GRANT EXECUTE ON FUNCTION pii_vault.request_recovery(text, text, text[]), pii_vault.serve_recovery(bigint),
  pii_vault.report_recovery_failure(bigint, text, text) TO pii_recovery;

-- Erasure and rotation, each through its function.
GRANT EXECUTE ON FUNCTION pii_vault.forget_user(text, text, text), pii_vault.add_key_version(bytea, text),
  pii_vault.retire_key_version(integer, integer, text, text), pii_vault.rotation_entries(bigint, integer),
  pii_vault.rotation_store(bigint, text[], bytea[]), pii_vault.finish_rotation(bigint) TO pii_vault_admin;

DO $$
BEGIN
  IF coalesce(current_setting('vault_roles.revoke_owner_from', true), '') <> '' THEN
    EXECUTE format('REVOKE %I FROM %I', current_setting('vault_roles.owner'), current_setting('vault_roles.revoke_owner_from'));
  END IF;
END $$;

COMMIT;
