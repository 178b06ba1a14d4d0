/**
 * The vault's promises tried as an insider would, with each role of scripts/vault-roles.sql
 * on a real Postgres: every claim of docs/vault.md's threat-model table has its test here.
 */
import { type DatabasePool, sql } from "slonik";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { maskRecord, type MaskStrategy } from "../mod.ts";
import { insertRows } from "../src/sink.ts";
import { createEntrySealer, createToken, parseRecoveryPublicKey, parseTokenKey } from "../strategies/_vault-crypto.ts";
import { byteaArray } from "../strategies/vault.ts";
import { runTool, waitFor } from "./helpers.ts";
import {
  createVault,
  createVaultFixture,
  load,
  login,
  OTHER_RECOVERY,
  rawSql,
  runSqlFile,
  sqlState,
  sqlStateOf,
  TEST_RECOVERY,
  tokensOf,
  toRecords,
  type VaultFixture,
} from "./vault-fixture.ts";

let f: VaultFixture;
beforeEach(async () => {
  f = await createVaultFixture();
});
afterEach(async () => {
  await f.close();
});

interface Roles {
  owner: MaskStrategy;
  loaderUrl: string;
  recoveryUrl: string;
  adminUrl: string;
  loader: DatabasePool;
  recovery: DatabasePool;
  admin: DatabasePool;
  nobody: DatabasePool;
}

/** The set-up docs/vault.md prescribes: the owner's first run, the roles script, one login per group role. */
async function createRoles(): Promise<Roles> {
  const owner = await createVault(f.pool, f.vaultEnv);
  await runSqlFile(f.pool, "scripts/vault-roles.sql");
  const [loaderUrl, recoveryUrl, adminUrl, nobodyUrl] = await Promise.all([
    f.createLoginRole("loader", "login_loader"),
    f.createLoginRole("recovery", "pii_recovery"),
    f.createLoginRole("admin", "pii_vault_admin"),
    f.createLoginRole("nobody", ""),
  ]);
  return {
    owner,
    loaderUrl,
    recoveryUrl,
    adminUrl,
    loader: await f.poolFor(loaderUrl),
    recovery: await f.poolFor(recoveryUrl),
    admin: await f.poolFor(adminUrl),
    nobody: await f.poolFor(nobodyUrl),
  };
}

const userOf = (url: string) => new URL(url).username;
const tokenArray = (tokens: readonly string[]) => sql.array([...tokens], "text");
const requestRecovery = (reason: string, ticket: string, tokens: readonly string[]) =>
  sql.unsafe`SELECT pii_vault.request_recovery(${reason}, ${ticket}, ${tokenArray(tokens)})`;
const serveRecovery = (id: unknown) =>
  sql.unsafe`SELECT outcome, token, encode(sealed, 'hex') AS sealed FROM pii_vault.serve_recovery(${id as number})`;
const recoverAs = (url: string, args: string[]) =>
  runTool(
    ["--reason", "insider test", "--ticket", "SEC-1", ...args],
    { ...f.recoveryEnv, DATABASE_URL: url },
    "scripts/recover.ts",
  );
const forgetAs = (url: string, userId: string) =>
  runTool(
    ["--user-id", userId, "--reason", "erasure request", "--ticket", "ER-1"],
    { ...f.env, DATABASE_URL: url },
    "scripts/forget.ts",
  );

/** Every row of every table of every schema, as JSON text, with where it lives. */
async function everyRow(pool: DatabasePool): Promise<Array<{ table: string; row: string }>> {
  const tables = await pool.anyFirst(sql.unsafe`
    SELECT format('%I.%I', table_schema, table_name) FROM information_schema.tables
    WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')`) as string[];
  const rows: Array<{ table: string; row: string }> = [];
  for (const table of tables) {
    for (const row of await pool.anyFirst(rawSql(`SELECT row_to_json(t)::text FROM ${table} t`)) as string[]) {
      rows.push({ table, row });
    }
  }
  return rows;
}

describe("1. recovery: no value leaves the vault without an audit row already committed", () => {
  it("lets no role but the vault's owner read a ciphertext or the vault's books, not the recovery or admin roles", async () => {
    const r = await createRoles();
    await load(f.pool, r.owner, [login("a", "10.1.2.3", "device-read-a")]);
    const tried: string[] = [];
    for (
      const [name, pool] of Object.entries({ recovery: r.recovery, admin: r.admin, loader: r.loader, nobody: r.nobody })
    ) {
      for (
        const table of [
          "entries",
          "audit",
          "tombstones",
          "requests",
          "quarantine",
          ...name === "nobody" ? ["keyring"] : [],
        ]
      ) {
        tried.push(
          `${name} SELECT pii_vault.${table}: ${await sqlState(pool, rawSql(`SELECT * FROM pii_vault.${table}`))}`,
        );
      }
      tried.push(
        `${name} UPDATE pii_vault.entries: ${await sqlState(
          pool,
          sql.unsafe`UPDATE pii_vault.entries SET sealed = sealed`,
        )}`,
      );
    }
    expect(tried).toEqual(tried.map((line) => line.replace(/: .*$/, ": 42501")));

    // The owner: this database's own role, which nobody logs in as and nobody is a member of.
    const owner = await f.pool.one(sql.unsafe`
      SELECT r.rolname = 'pii_vault_owner_' || current_database() AS own_name, r.rolcanlogin, r.rolsuper,
             (SELECT count(*)::int FROM pg_auth_members m WHERE m.roleid = r.oid) AS members,
             (SELECT count(*)::int FROM pg_class c WHERE c.relnamespace = 'pii_vault'::regnamespace AND c.relowner <> r.oid AND c.relkind = 'r') AS tables_owned_by_others,
             (SELECT count(*)::int FROM pg_proc p WHERE p.pronamespace = 'pii_vault'::regnamespace AND p.proowner <> r.oid) AS functions_owned_by_others
      FROM pg_roles r WHERE r.oid = (SELECT relowner FROM pg_class WHERE oid = 'pii_vault.entries'::regclass)`);
    expect(owner).toEqual({
      own_name: true,
      rolcanlogin: false,
      rolsuper: false,
      members: 0,
      tables_owned_by_others: 0,
      functions_owned_by_others: 0,
    });
  });

  it("hands the vault over when a table owner without superuser runs the roles script, and leaves that owner unable to read it", async () => {
    const ownerUrl = await f.createLoginRole("tableowner", "");
    const tableOwner = userOf(ownerUrl);
    await f.pool.query(sql.unsafe`ALTER ROLE ${sql.identifier([tableOwner])} CREATEROLE`);
    // WITH GRANT OPTION: the roles script lends CREATE on the database to the vault's owner, which taking the schema needs.
    await f.pool.query(
      rawSql(`GRANT CREATE ON DATABASE ${new URL(f.databaseUrl).pathname.slice(1)} TO ${tableOwner} WITH GRANT OPTION`),
    );
    await f.pool.query(rawSql(`GRANT CREATE ON SCHEMA public TO ${tableOwner}`));
    const owner = await f.poolFor(ownerUrl);
    await load(owner, await createVault(owner, f.vaultEnv), [login("a", "10.7.7.7", "device-owner-a")]);
    await runSqlFile(owner, "scripts/vault-roles.sql");
    await runSqlFile(owner, "scripts/vault-roles.sql");
    expect(await sqlState(owner, sql.unsafe`SELECT * FROM pii_vault.entries`)).toBe("42501");
    const vaultOwner = `pii_vault_owner_${new URL(f.databaseUrl).pathname.slice(1)}`;
    expect(await sqlState(owner, sql.unsafe`SET ROLE ${sql.identifier([vaultOwner])}`)).toBe("42501");
    // Issue 23.6: nor, without a GRANT, drop the audit or swap a function for one that captures ciphertexts.
    expect(await sqlState(owner, sql.unsafe`DROP TABLE pii_vault.audit`)).toBe("42501");
    expect(await sqlState(owner, sql.unsafe`DROP FUNCTION pii_vault.write_entries(integer, text[], text[], bytea[])`))
      .toBe("42501");
    expect(await sqlState(owner, sql.unsafe`ALTER SCHEMA pii_vault RENAME TO taken`)).toBe("42501");
    expect(
      await owner.oneFirst(sql.unsafe`
      SELECT r.rolname::text FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner WHERE n.nspname = 'pii_vault'`),
    ).toBe(vaultOwner);
    // And the roles work as set up by it.
    const loaderUrl = await f.createLoginRole("loader", "login_loader");
    const loader = await f.poolFor(loaderUrl);
    await load(loader, await createVault(loader, f.vaultEnv), [login("b", "10.7.7.8", "device-owner-b")]);
    const run = await recoverAs(await f.createLoginRole("recovery", "pii_recovery"), ["--user-id", "b"]);
    expect(run.stderr).toBe("");
    expect(run.stdout).toContain("\t10.7.7.8\n");
  });

  it("serves a recovery only for a request an earlier transaction committed, so a rollback hides none, and audits denials", async () => {
    const r = await createRoles();
    await load(f.pool, r.owner, [login("a", "10.9.8.7", "device-serve-a")]);
    const a = await tokensOf(f.pool, "a");

    // Asking and taking in one transaction: refused, nothing handed out.
    const sameTransaction = await r.recovery.transaction(async (tx) => {
      const id = await tx.oneFirst(requestRecovery("same transaction", "T-1", [a.ip]));
      return await tx.any(serveRecovery(id));
    });
    expect(sameTransaction).toEqual([{ outcome: "denied", token: null, sealed: null }]);
    // Nor from a savepoint released into it: its rows belong to the same, uncommitted, transaction.
    const inSavepoint = await r.recovery.transaction(async (tx) => {
      const id = await tx.transaction(async (savepoint) =>
        await savepoint.oneFirst(requestRecovery("savepoint", "T-2", [a.ip]))
      );
      return await tx.any(serveRecovery(id));
    });
    expect(inSavepoint).toEqual([{ outcome: "denied", token: null, sealed: null }]);

    // Committed first, served after; the serving transaction rolled back still leaves the request in the audit.
    const id = await r.recovery.oneFirst(requestRecovery("ticket SEC-9", "SEC-9", [a.ip, a.device_id]));
    await expect(r.recovery.transaction(async (tx) => {
      const served = await tx.any(serveRecovery(id)) as ReadonlyArray<{ outcome: string; token: string }>;
      expect(served.map((s) => [s.outcome, s.token])).toEqual([["served", a.ip], ["served", a.device_id]]);
      throw new Error("rolled back after reading");
    })).rejects.toThrow("rolled back after reading");

    // Another login may not take what this one asked for; its denial is audited when it commits.
    const other = await f.poolFor(await f.createLoginRole("recovery2", "pii_recovery"));
    expect(await other.any(serveRecovery(id))).toEqual([{ outcome: "denied", token: null, sealed: null }]);

    const audit = await f.pool.any(sql.unsafe`
      SELECT action, outcome, db_user, reason, ticket, request_id IS NOT NULL AS answers, at IS NOT NULL AS dated FROM pii_vault.audit ORDER BY id`);
    const recoverer = userOf(r.recoveryUrl);
    const row = (outcome: string, reason: string | null, ticket: string | null, user = recoverer) => ({
      action: "recover",
      outcome,
      db_user: user,
      reason,
      ticket,
      answers: reason === null,
      dated: true,
    });
    expect(audit).toEqual([
      row("requested", "same transaction", "T-1"),
      row("denied", null, null),
      row("requested", "savepoint", "T-2"),
      row("denied", null, null),
      row("requested", "ticket SEC-9", "SEC-9"),
      row("denied", null, null, (await other.oneFirst(sql.unsafe`SELECT session_user::text`)) as string),
    ]);
    // The audit says that a recovery happened and why, never which tokens.
    for (const { row: text } of (await everyRow(f.pool)).filter((x) => x.table === "pii_vault.audit")) {
      expect(text).not.toContain("vlt1:");
    }
  });

  it("lets no role write the audit itself: who and when are the database's, and the caller states only reason and ticket", async () => {
    const r = await createRoles();
    for (const pool of [r.recovery, r.admin, r.loader]) {
      expect(
        await pool.oneFirst(
          sql.unsafe`SELECT has_any_column_privilege('pii_vault.audit', 'INSERT, UPDATE, REFERENCES')`,
        ),
      ).toBe(false);
    }
    // Today's attack: an audit row claiming an erasure by another OS user.
    expect(
      await sqlState(
        r.recovery,
        sql.unsafe`
      INSERT INTO pii_vault.audit (action, reason, os_user) VALUES ('forget', 'cover story', 'someone-else')`,
      ),
    ).not.toBe("ok");
    expect(await f.pool.oneFirst(sql.unsafe`SELECT count(*)::int FROM pii_vault.audit WHERE action = 'forget'`)).toBe(
      0,
    );
    // A request without a reason or a ticket is refused by the database, not only by recover.ts.
    expect(await sqlState(r.recovery, requestRecovery(" ", "T-3", ["vlt1:" + "A".repeat(43)]))).toBe("22023");
    expect(await sqlState(r.recovery, requestRecovery("why", "", ["vlt1:" + "A".repeat(43)]))).toBe("22023");
  });

  it("recover.ts recovers in two transactions as the recovery role, and refuses a value that does not match its token", async () => {
    const r = await createRoles();
    await load(f.pool, r.owner, [login("a", "10.1.1.1", "device-cli-a")]);
    const a = await tokensOf(f.pool, "a");
    const run = await recoverAs(r.recoveryUrl, ["--user-id", "a"]);
    expect(run.stderr).toBe("");
    expect(run.stdout).toBe(`ip\t${a.ip}\t10.1.1.1\ndevice_id\t${a.device_id}\tdevice-cli-a\n`);
    expect(
      await f.pool.any(sql.unsafe`SELECT outcome, db_user, reason, ticket, detail FROM pii_vault.audit ORDER BY id`),
    ).toEqual([
      {
        outcome: "requested",
        db_user: userOf(r.recoveryUrl),
        reason: "insider test",
        ticket: "SEC-1",
        detail: "tokens=2",
      },
      { outcome: "served", db_user: userOf(r.recoveryUrl), reason: null, ticket: null, detail: "values=2" },
    ]);

    // The loader holds the token key and the public key: it can plant a false value under a token
    // not written yet. The recovery role cannot tell (that would take the token key), so the
    // planted value is what comes back: docs/vault.md states it; the loader sees every value anyway.
    const planted = await r.owner.mask("203.0.113.50", "ip");
    const sealed = createEntrySealer(parseRecoveryPublicKey(f.vaultEnv))("ip", planted, "198.51.100.1");
    await r.loader.query(sql.unsafe`
      SELECT pii_vault.write_entries(1, ${tokenArray([planted])}, ${tokenArray(["ip"])}, ${byteaArray([sealed])})`);
    await load(r.loader, await createVault(r.loader, f.vaultEnv), [login("b", "203.0.113.50", "device-cli-b")]);
    const forged = await recoverAs(r.recoveryUrl, [planted]);
    expect(forged.stdout).toBe(`ip\t${planted}\t198.51.100.1\n`);
  });
});

describe("2. erasure: once forgotten, nothing comes back and nothing links", () => {
  it("writes no entry for a redelivered message, and a tombstone keeps an erased value out by any later message", async () => {
    const r = await createRoles();
    const bodies = [login("gone", "172.16.5.9", "device-gone-5"), login("mate", "172.16.5.9", "device-mate-5")];
    const ids = ["m-gone-1", "m-mate-1"];
    await load(r.loader, await createVault(r.loader, f.vaultEnv), bodies, ids);
    const gone = await tokensOf(f.pool, "gone");

    const forget = await forgetAs(r.adminUrl, "gone");
    expect(forget.stderr).toBe("");
    expect(forget.stdout).toBe("forgotten: rows=1 vault_entries_deleted=2 also_in_other_users_rows=1\n");

    // The message whose delete was lost comes back, to a loader started afresh: a duplicate, and no entry.
    const again = await load(r.loader, await createVault(r.loader, f.vaultEnv), [bodies[0]!], [ids[0]!]);
    expect(again).toMatchObject({ inserted: 0, duplicates: 1 });
    const byToken = await recoverAs(r.recoveryUrl, [gone.device_id]);
    expect(byToken.stdout).toBe("");
    expect(byToken.stderr).toBe(
      `error: 1 token(s) not in the vault (erased by sqs-login-masker forget, or never stored): ${gone.device_id}\n`,
    );

    // A new message carrying the erased value: its row loads, the value is not stored again.
    await load(r.loader, await createVault(r.loader, f.vaultEnv), [login("later", "172.16.5.10", "device-gone-5")]);
    expect((await tokensOf(f.pool, "later")).device_id).toBe(gone.device_id);
    expect(
      await f.pool.oneFirst(sql.unsafe`SELECT count(*)::int FROM pii_vault.entries WHERE token = ${gone.device_id}`),
    ).toBe(0);
    // The housemate's shared address went with the erased user's (issue 23.5); their own device stays.
    const mate = await recoverAs(r.recoveryUrl, ["--user-id", "mate"]);
    expect(mate.stderr).toBe(
      `error: 1 token(s) not in the vault (erased by sqs-login-masker forget, or never stored): ${gone.ip}\n`,
    );
  });

  it("leaves nothing in any table that links an erased user to a token or a value, an earlier recovery's audit included", async () => {
    const r = await createRoles();
    const user = "user-erased-7f3a";
    await load(r.loader, await createVault(r.loader, f.vaultEnv), [
      login(user, "172.16.6.1", "device-erased-6"),
      login("mate-6", "172.16.6.1", "device-mate-6"),
    ]);
    const gone = await tokensOf(f.pool, user);
    expect((await recoverAs(r.recoveryUrl, ["--user-id", user])).stdout).toContain("device-erased-6");
    expect((await forgetAs(r.adminUrl, user)).stdout).toMatch(/^forgotten: rows=1 /);

    const links = (await everyRow(f.pool)).filter(({ row }) =>
      row.includes(user) && [gone.ip, gone.device_id, "172.16.6.1", "device-erased-6"].some((v) => row.includes(v))
    );
    expect(links).toEqual([]);
    // The erased token is left only as a tombstone, which names no one.
    const holders = (await everyRow(f.pool)).filter(({ row }) => row.includes(gone.device_id)).map((x) => x.table);
    expect(holders).toEqual(["pii_vault.tombstones"]);
  });
});

describe("3. key rotation: a retired version holds no entry and takes none", () => {
  it("waits for a batch in flight, then refuses the old key: the loader stops with one line naming the fix", async () => {
    const r = await createRoles();
    const oldLoader = await createVault(r.loader, f.vaultEnv);
    await load(r.loader, oldLoader, [login("a", "192.0.2.10", "device-rot-a")]);

    // A batch of the old loader is mid-transaction when the rotation starts.
    let release!: () => void;
    let entered!: () => void;
    const batchEntered = new Promise<void>((resolve) => (entered = resolve));
    const batch = await Promise.all(
      toRecords([login("b", "192.0.2.11", "device-rot-b")]).map((m) => maskRecord(oldLoader, m)),
    );
    const inFlight = r.loader.transaction(async (tx) => {
      await insertRows(tx, oldLoader, batch);
      entered();
      await new Promise<void>((resolve) => (release = resolve));
    });
    await batchEntered;
    const rotateEnv = {
      ...f.env,
      DATABASE_URL: r.adminUrl,
      VAULT_PREVIOUS_RECOVERY_KEY: TEST_RECOVERY.VAULT_RECOVERY_KEY,
      VAULT_RECOVERY_PUBLIC_KEY: OTHER_RECOVERY.VAULT_RECOVERY_PUBLIC_KEY,
    };
    const rotation = runTool(["--reason", "yearly", "--ticket", "OPS-2"], rotateEnv, "scripts/rotate-vault-key.ts");
    let rotationEnded = false;
    void rotation.then(() => (rotationEnded = true));
    await waitFor(
      "the rotation to wait for the batch in flight (or to end without waiting)",
      async () =>
        rotationEnded ||
        await f.pool.oneFirst(sql.unsafe`
        SELECT count(*)::int FROM pg_stat_activity WHERE usename = ${
            userOf(r.adminUrl)
          } AND wait_event_type = 'Lock'`) as number > 0,
    );
    release();
    await inFlight;
    const rotated = await rotation;
    expect(rotated.stderr).toBe("");
    expect(rotated.stdout).toBe("rotated: reencrypted=4 from_version=1 to_version=2 previous_version_retired\n");
    expect(await f.pool.anyFirst(sql.unsafe`SELECT DISTINCT key_version FROM pii_vault.entries`)).toEqual([2]);

    // The loader still on version 1 writes nothing more under it.
    await expect(load(r.loader, oldLoader, [login("c", "192.0.2.12", "device-rot-c")])).rejects.toThrow(
      "Vault key version 1 was retired by a key rotation: restart the loader with VAULT_RECOVERY_PUBLIC_KEY of a current version (sqs-login-masker rotate-vault-key, docs/vault.md)",
    );
    expect(
      await sqlState(
        r.loader,
        sql.unsafe`
      SELECT pii_vault.write_entries(1, ${tokenArray([await oldLoader.mask("192.0.2.13", "ip")])}, ${
          tokenArray(["ip"])
        }, ${byteaArray([Buffer.from([0])])})`,
      ),
    ).toBe("VK001");
    expect(await f.pool.oneFirst(sql.unsafe`SELECT count(*)::int FROM pii_vault.entries WHERE key_version = 1`)).toBe(
      0,
    );
    expect(
      await f.pool.any(sql.unsafe`
      SELECT key_version, emptied_at IS NOT NULL AS key_gone, retired_at IS NOT NULL AS retired FROM pii_vault.keyring ORDER BY key_version`),
    )
      .toEqual([{ key_version: 1, key_gone: true, retired: true }, {
        key_version: 2,
        key_gone: false,
        retired: false,
      }]);

    // Started afresh with the old key, a loader is refused at once.
    const restarted = await runTool(["--drain", "--strategy", "vault"], { ...f.vaultEnv, DATABASE_URL: r.loaderUrl });
    expect(restarted.code).toBe(2);
    expect(restarted.stderr).toBe(
      "error: VAULT_RECOVERY_PUBLIC_KEY is keyring version 1, retired by a key rotation: set it to the public key of a current version (2)\n",
    );
  });

  it("lets the admin re-encrypt only under a rotation request committed before, and never read an entry directly", async () => {
    const r = await createRoles();
    await load(f.pool, r.owner, [login("a", "192.0.2.20", "device-adm-a")]);
    const other = parseRecoveryPublicKey(OTHER_RECOVERY).raw.toString("hex");
    expect(await sqlState(r.admin, sql.unsafe`DELETE FROM pii_vault.entries`)).toBe("42501");
    expect(
      await sqlState(
        r.admin,
        sql.unsafe`INSERT INTO pii_vault.keyring (key_version, public_key) VALUES (9, decode(${other}, 'hex'))`,
      ),
    ).toBe("42501");
    await r.admin.query(sql.unsafe`SELECT pii_vault.add_key_version(decode(${other}, 'hex'), 'test')`);
    const sameTransaction = r.admin.transaction(async (tx) => {
      const id = await tx.oneFirst(sql.unsafe`SELECT pii_vault.retire_key_version(1, 2, 'same transaction', NULL)`);
      return await tx.any(sql.unsafe`SELECT * FROM pii_vault.rotation_entries(${id as number}, 10)`);
    });
    expect(await sqlStateOf(sameTransaction)).toBe("42501");
  });
});

describe("4. the loader: narrow writes that reveal nothing, and a ledger it cannot wipe", () => {
  it("cannot probe the vault with a rolled-back insert, nor delete the message ledger; pruning takes only ids past SQS's retention", async () => {
    const r = await createRoles();
    await load(f.pool, r.owner, [login("a", "10.4.4.4", "device-probe-a")]);
    const a = await tokensOf(f.pool, "a");

    // The probe: row count 0 from INSERT ... ON CONFLICT DO NOTHING meant "present".
    expect(
      await sqlState(
        r.loader,
        sql.unsafe`
      INSERT INTO pii_vault.entries (token, field, key_version, sealed) VALUES (${a.ip}, 'ip', 1, '\\x00') ON CONFLICT DO NOTHING`,
      ),
    ).toBe("42501");
    for (
      const statement of [
        sql.unsafe`SELECT * FROM user_logins`,
        sql.unsafe`DELETE FROM user_logins`,
        sql.unsafe`DELETE FROM user_logins_sqs_messages`,
        sql.unsafe`TRUNCATE user_logins_sqs_messages`,
        sql.unsafe`UPDATE user_logins_sqs_messages SET processed_at = now() - interval '30 days'`,
      ]
    ) expect(await sqlState(r.loader, statement)).toBe("42501");

    // The narrow write answers alike for a present value, an absent one, and an erased one, and overwrites nothing.
    const before = await f.pool.oneFirst(
      sql.unsafe`SELECT encode(sealed, 'hex') FROM pii_vault.entries WHERE token = ${a.ip}`,
    );
    const absent = await r.owner.mask("10.4.4.5", "ip");
    await f.pool.query(
      sql.unsafe`INSERT INTO pii_vault.tombstones (token) VALUES (${await r.owner.mask("10.4.4.6", "ip")})`,
    );
    const answers = [];
    for (const token of [a.ip, absent, await r.owner.mask("10.4.4.6", "ip")]) {
      answers.push(
        await r.loader.oneFirst(sql.unsafe`
        SELECT pii_vault.write_entries(1, ${tokenArray([token])}, ${tokenArray(["ip"])}, ${
          byteaArray([Buffer.from([1, 2])])
        })::text`),
      );
    }
    expect(answers).toEqual(["", "", ""]);
    expect(await f.pool.oneFirst(sql.unsafe`SELECT encode(sealed, 'hex') FROM pii_vault.entries WHERE token = ${a.ip}`))
      .toBe(before);

    // Pruning: an id older than SQS keeps a message goes, a younger one stays, whoever asks.
    await f.pool.query(sql.unsafe`
      INSERT INTO user_logins_sqs_messages (message_id, processed_at) VALUES ('old', now() - interval '16 days'), ('young', now() - interval '13 days')`);
    await r.loader.query(sql.unsafe`SELECT user_logins_sqs_messages_prune()`);
    const left = await f.pool.anyFirst(
      sql.unsafe`SELECT message_id FROM user_logins_sqs_messages WHERE message_id IN ('old', 'young')`,
    );
    expect(left).toEqual(["young"]);
  });

  it("still drains the queue as the loading role, which the roles script leaves with nothing but those writes", async () => {
    const r = await createRoles();
    const { sendBodies } = await import("../scripts/produce.ts");
    await sendBodies(f.sqs, f.queueUrl, [
      login("a", "10.5.5.5", "device-drain-a"),
      login("b", "10.5.5.5", "device-drain-b"),
    ]);
    const drain = await runTool(["--drain", "--strategy", "vault"], { ...f.vaultEnv, DATABASE_URL: r.loaderUrl });
    expect(drain.stderr).not.toMatch(/^error/m);
    expect(drain.stdout).toMatch(/^loaded=2 /);
    expect(await f.pool.oneFirst(sql.unsafe`SELECT count(*)::int FROM pii_vault.entries`)).toBe(3);
  });
});

describe("5. keys split by role, and an audit that cannot be hidden (issue 23)", () => {
  /** Every IPv4 address of 198.51.0.0/16 whose token under `key` is one of `tokens`. */
  const enumerate = (key: Uint8Array | ReturnType<typeof parseTokenKey>["key"], tokens: ReadonlySet<string>) => {
    const found: string[] = [];
    for (let i = 0; i < 65_536; i++) {
      const ip = `198.51.${i >> 8}.${i & 255}`;
      if (tokens.has(createToken(key, "ip", ip))) found.push(ip);
    }
    return found;
  };

  it("1. the recovery role cannot reverse tokens offline: nothing it holds or may read makes a token", async () => {
    const r = await createRoles();
    await load(r.loader, await createVault(r.loader, f.vaultEnv), [login("victim", "198.51.7.9", "device-enum-1")]);
    // What the recovery role may read: user_logins (the tokens) and the keyring.
    const tokens = new Set(
      await r.recovery.anyFirst(sql.unsafe`SELECT masked_ip FROM user_logins`) as string[],
    );
    const keyring = await r.recovery.anyFirst(sql.unsafe`
      SELECT encode(k.v, 'hex') FROM pii_vault.keyring, LATERAL (VALUES (public_key)) AS k(v)`) as string[];
    // And what it holds: its environment. Every secret, raw and as the tool derives a token key from it.
    const held = [
      ...Object.entries(f.recoveryEnv).filter(([name]) => name.startsWith("VAULT_")).map(([, v]) => v),
      ...keyring,
    ];
    const candidates = held.flatMap((text) => [
      Buffer.from(text, "utf8"),
      Buffer.from(text, "base64url"),
      Buffer.from(text, "hex"),
      ...Buffer.byteLength(text) >= 32 ? [parseTokenKey({ VAULT_TOKEN_KEY: text }).key] : [],
    ]).filter((k) => !(k instanceof Buffer) || k.length > 0);
    for (const key of candidates) expect(enumerate(key, tokens)).toEqual([]);
    // The loader's key finds it in the same search: the search itself works.
    expect(enumerate(parseTokenKey(f.vaultEnv).key, tokens)).toEqual(["198.51.7.9"]);
    // And the loader's secrets do not open entries: recovery with them is refused before anything is asked.
    const withLoaderKeys = await runTool(
      ["--reason", "r", "--ticket", "t", "--user-id", "victim"],
      { ...f.vaultEnv, DATABASE_URL: r.recoveryUrl },
      "scripts/recover.ts",
    );
    expect(withLoaderKeys.code).toBe(2);
    expect(withLoaderKeys.stderr).toMatch(/^error: VAULT_RECOVERY_KEY is not set/);
    expect(await f.pool.oneFirst(sql.unsafe`SELECT count(*)::int FROM pii_vault.audit`)).toBe(0);
  });

  it("2. the recovery window is the wall clock's: a transaction begun inside it is not served after it ends", async () => {
    const r = await createRoles();
    await load(f.pool, r.owner, [login("a", "10.23.2.1", "device-window-a")]);
    const a = await tokensOf(f.pool, "a");
    const id = await r.recovery.oneFirst(requestRecovery("window", "T-23-2", [a.ip])) as number;
    // The request's last second: the owner shortens it, as ten minutes passing would.
    await f.pool.query(
      sql.unsafe`UPDATE pii_vault.requests SET expires_at = clock_timestamp() + interval '1 second' WHERE id = ${id}`,
    );
    const served = await r.recovery.transaction(async (tx) => {
      await tx.query(sql.unsafe`SELECT now()`);
      await tx.query(sql.unsafe`SELECT pg_sleep(1.5)`);
      return await tx.any(serveRecovery(id));
    });
    expect(served).toEqual([{ outcome: "denied", token: null, sealed: null }]);
  });

  it("3. a serving rolled back and reported as a failure leaves the committed request, and the report marked as the client's", async () => {
    const r = await createRoles();
    await load(f.pool, r.owner, [login("a", "10.23.3.1", "device-hide-a")]);
    const a = await tokensOf(f.pool, "a");
    const id = await r.recovery.oneFirst(requestRecovery("hide", "T-23-3", [a.ip])) as number;
    // Take the ciphertexts, roll back, then claim the recovery failed.
    const taken = await sqlStateOf(r.recovery.transaction(async (tx) => {
      expect((await tx.any(serveRecovery(id))).map((row) => (row as { outcome: string }).outcome)).toEqual(["served"]);
      throw new Error("roll back");
    }));
    expect(taken).toBe("roll back");
    await r.recovery.query(
      sql.unsafe`SELECT pii_vault.report_recovery_failure(${id}, 'key_version_not_configured', NULL)`,
    );
    // The trail: the database's own rows say a request was committed (values may have left);
    // the failure is the client's word, and says so.
    expect(
      await f.pool.any(sql.unsafe`
      SELECT outcome, source FROM pii_vault.audit WHERE id = ${id} OR request_id = ${id} ORDER BY id`),
    ).toEqual([{ outcome: "requested", source: "database" }, { outcome: "failed", source: "client" }]);
    // Nothing the client may call writes a row the database would vouch for as a failure.
    expect(
      await f.pool.oneFirst(sql.unsafe`
      SELECT count(*)::int FROM pii_vault.audit WHERE request_id = ${id} AND source = 'database'`),
    ).toBe(0);
  });

  it("4. erasure wins over a REPEATABLE READ snapshot taken before it committed", async () => {
    const r = await createRoles();
    await load(f.pool, r.owner, [login("gone", "10.23.4.1", "device-snapshot-1")]);
    const gone = await tokensOf(f.pool, "gone");
    const id = await r.recovery.oneFirst(requestRecovery("snapshot", "T-23-4", [gone.ip, gone.device_id])) as number;
    let served: unknown;
    const attempt = r.recovery.transaction(async (tx) => {
      await tx.query(sql.unsafe`SET TRANSACTION ISOLATION LEVEL REPEATABLE READ`);
      await tx.query(sql.unsafe`SELECT count(*) FROM user_logins`);
      expect((await forgetAs(r.adminUrl, "gone")).stdout).toMatch(/^forgotten: rows=1 /);
      served = await tx.any(serveRecovery(id));
      // No retry: Slonik would run the whole transaction again on 40001, with a new snapshot.
    }, 0);
    expect(await sqlStateOf(attempt)).toBe("40001");
    expect(served).toBeUndefined();
  });

  it("5. a decoy row of another user carrying the victim's tokens does not keep them from erasure", async () => {
    const r = await createRoles();
    await load(r.loader, await createVault(r.loader, f.vaultEnv), [login("victim", "10.23.5.1", "device-decoy-1")]);
    const victim = await tokensOf(f.pool, "victim");
    // The loader writes a row for a made-up user with the victim's tokens.
    await r.loader.query(sql.unsafe`
      INSERT INTO user_logins (user_id, device_type, masked_ip, masked_device_id, locale, app_version, create_date)
      VALUES ('decoy', 'ios', ${victim.ip}, ${victim.device_id}, 'US', 1, current_date)`);
    const forget = await forgetAs(r.adminUrl, "victim");
    expect(forget.stdout).toBe("forgotten: rows=1 vault_entries_deleted=2 also_in_other_users_rows=2\n");
    const viaDecoy = await recoverAs(r.recoveryUrl, ["--user-id", "decoy"]);
    expect(viaDecoy.stdout).toBe("");
    expect(viaDecoy.stderr).toMatch(/^error: 2 token\(s\) not in the vault/);
  });

  it("7. write_entries answers a NULL field alike for a present, an absent and an erased token", async () => {
    const r = await createRoles();
    await load(f.pool, r.owner, [login("a", "10.23.7.1", "device-null-a")]);
    const present = (await tokensOf(f.pool, "a")).ip;
    const erased = await r.owner.mask("10.23.7.3", "ip");
    await f.pool.query(sql.unsafe`INSERT INTO pii_vault.tombstones (token) VALUES (${erased})`);
    const states = [];
    for (const token of [present, await r.owner.mask("10.23.7.2", "ip"), erased]) {
      states.push(
        await sqlState(
          r.loader,
          sql.unsafe`SELECT pii_vault.write_entries(1, ${tokenArray([token])}, ARRAY[NULL]::text[], ${
            byteaArray([Buffer.from([1])])
          })`,
        ),
      );
    }
    expect(states).toEqual(["22023", "22023", "22023"]);
  });

  it("7. (stated, not removed) the loader's own transaction statistics tell a present value from an absent one", async () => {
    const r = await createRoles();
    await load(f.pool, r.owner, [login("a", "10.23.7.11", "device-stats-a")]);
    const seal = createEntrySealer(parseRecoveryPublicKey(f.vaultEnv));
    const inserted = async (value: string) =>
      await r.loader.transaction(async (tx) => {
        const token = await r.owner.mask(value, "ip");
        await tx.query(
          sql.unsafe`SELECT pii_vault.write_entries(1, ${tokenArray([token])}, ${tokenArray(["ip"])}, ${
            byteaArray([seal("ip", token, value)])
          })`,
        );
        const count = await tx.oneFirst(sql.unsafe`
          SELECT n_tup_ins::int FROM pg_stat_xact_all_tables WHERE relid = 'pii_vault.entries'::regclass`);
        throw Object.assign(new Error("roll back"), { count });
      }).catch((error: { count: number }) => error.count);
    // docs/vault.md's threat model names this oracle: the loader sees the live stream anyway.
    expect([await inserted("10.23.7.11"), await inserted("10.23.7.12")]).toEqual([0, 1]);
  });

  it("7. (stated, not removed) any role reads the vault's table sizes and erasure counts from pg_stat_all_tables", async () => {
    const r = await createRoles();
    await load(f.pool, r.owner, [login("a", "10.23.7.21", "device-size-a")]);
    expect((await forgetAs(r.adminUrl, "a")).stdout).toMatch(/^forgotten: rows=1 vault_entries_deleted=2 /);
    // A role with no grant at all: statistics are not privileges. docs/vault.md names this.
    const counts = async () =>
      await r.nobody.maybeOne(sql.unsafe`
        SELECT n_tup_ins::int AS inserted, n_tup_del::int AS deleted FROM pg_stat_all_tables
        WHERE schemaname = 'pii_vault' AND relname = 'entries'`) as { inserted: number; deleted: number } | null;
    // Each backend reports its counts when idle, within seconds.
    await waitFor("the vault's entries counted as 2 inserted and 2 deleted", async () => {
      const seen = await counts();
      return seen?.inserted === 2 && seen.deleted === 2;
    });
  });

  it("8. an entry that does not open is set aside when recovery reports it, and the value's next load repairs it", async () => {
    const r = await createRoles();
    await load(r.loader, await createVault(r.loader, f.vaultEnv), [login("a", "10.23.8.1", "device-repair-a")]);
    const a = await tokensOf(f.pool, "a");
    // Garbage where the entry was (the admin's rotation_store could do this).
    await f.pool.query(sql.unsafe`UPDATE pii_vault.entries SET sealed = '\x0200' WHERE token = ${a.ip}`);
    const broken = await recoverAs(r.recoveryUrl, [a.ip]);
    expect(broken.stderr).toMatch(/does not open under key version 1: .* set aside/);
    expect(await f.pool.oneFirst(sql.unsafe`SELECT count(*)::int FROM pii_vault.quarantine WHERE token = ${a.ip}`))
      .toBe(1);
    // The value arrives again (a new login): a loader writes its entry afresh.
    await load(r.loader, await createVault(r.loader, f.vaultEnv), [login("a2", "10.23.8.1", "device-repair-b")]);
    const repaired = await recoverAs(r.recoveryUrl, [a.ip]);
    expect(repaired.stdout).toBe(`ip\t${a.ip}\t10.23.8.1\n`);
  });
});
