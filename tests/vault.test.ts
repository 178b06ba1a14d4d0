/**
 * The vault strategy against the real Postgres and SQS emulator: tokens, encryption,
 * recovery and its audit, the roles, erasure, key rotation, and the CLI end to end.
 * tests/vault-insider.test.ts tries each role's limits as an insider would.
 */
import { type DatabasePool, sql } from "slonik";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ConfigError, loadStrategy, maskRecord, type MaskStrategy } from "../mod.ts";
import { insertRows } from "../src/sink.ts";
import { EDGE_CASE_BODIES, INVALID_BODIES, sampleBodies, sendBodies } from "../scripts/produce.ts";
import { forgetUser } from "../scripts/forget.ts";
import { recoverValues } from "../scripts/recover.ts";
import { VaultError } from "../src/commands/vault-command.ts";
import { createToken, ERASED_MARKER, isToken, parseRecoveryKeys } from "../strategies/_vault-crypto.ts";
import { createRecentSet } from "../strategies/vault.ts";
import { readRows, runDeno, runTool } from "./helpers.ts";
import {
  createVault as createVaultOn,
  createVaultFixture,
  load,
  login,
  OTHER_RECOVERY,
  runSqlFile,
  sqlState,
  TEST_RECOVERY,
  TEST_TOKEN_KEY,
  tokensOf,
  toRecords,
  type VaultFixture,
} from "./vault-fixture.ts";

let f: VaultFixture;
let env: Record<string, string>;
let recoveryEnv: Record<string, string>;
beforeEach(async () => {
  f = await createVaultFixture();
  env = f.vaultEnv;
  recoveryEnv = f.recoveryEnv;
});
afterEach(async () => {
  await f.close();
});

const createVault = (pool: DatabasePool, vaultEnv: Record<string, string> = env): Promise<MaskStrategy> =>
  createVaultOn(pool, vaultEnv);
const auditCount = async () => await f.pool.oneFirst(sql.unsafe`SELECT count(*)::int FROM pii_vault.audit`) as number;
const oneLine = (text: string) => text.trim().split("\n").length === 1;
const recover = (args: string[], extra: Record<string, string | undefined> = {}) =>
  runTool(["--reason", "test", "--ticket", "T-1", ...args], { ...recoveryEnv, ...extra }, "scripts/recover.ts");
const asked = { reason: "t", ticket: "t" };
/** The recovery role's keys: the private half only, no token key. */
const recoveryKeys = (keys: Record<string, string> = recoveryEnv) => parseRecoveryKeys(keys, ["VAULT_RECOVERY_KEY"]);

describe("vault tokens and entries", () => {
  it("round-trips values through the vault, with one stable token per (field, value)", async () => {
    const strategy = await createVault(f.pool);
    const token = await strategy.mask("199.172.111.135", "ip");
    expect(isToken(token)).toBe(true);
    expect(token).toHaveLength(48);
    expect(await strategy.mask("199.172.111.135", "ip")).toBe(token);
    expect(await strategy.mask("199.172.111.135", "device_id")).not.toBe(token);
    expect(await strategy.mask("199.172.111.136", "ip")).not.toBe(token);
    // A second loader with the same token key makes the same tokens.
    expect(await (await createVault(f.pool)).mask("199.172.111.135", "ip")).toBe(token);

    await load(f.pool, strategy, [
      login("a", "199.172.111.135", "dev-aaaa-1"),
      login("b", "199.172.111.135", "dev-bbbb-2"),
    ]);
    await load(f.pool, strategy, [login("c", "199.172.111.135", "dev-aaaa-1")]);
    expect(await f.pool.oneFirst(sql.unsafe`SELECT count(*)::int FROM pii_vault.entries`)).toBe(3);
    const a = await tokensOf(f.pool, "a");
    expect(await tokensOf(f.pool, "c")).toEqual(a);
    const recovered = await recoverValues(f.pool, recoveryKeys(), { ...asked, tokens: [a.ip, a.device_id] });
    expect(recovered).toEqual([
      { field: "ip", token: a.ip, value: "199.172.111.135" },
      { field: "device_id", token: a.device_id, value: "dev-aaaa-1" },
    ]);
    const versions = await f.pool.anyFirst(sql.unsafe`SELECT DISTINCT key_version FROM pii_vault.entries`);
    expect(versions).toEqual([1]);
  });

  it("sends no entry again for a token this process wrote in a committed batch, but sends one a rollback undid", async () => {
    const strategy = await createVault(f.pool);
    const entries = async () =>
      await f.pool.oneFirst(sql.unsafe`SELECT count(*)::int FROM pii_vault.entries`) as number;
    await load(f.pool, strategy, [login("a", "10.3.3.3", "device-cache-a")]);
    expect(await entries()).toBe(2);
    // Gone from the table behind its back (only the owner can do this): the same process does not write it again...
    await f.pool.query(sql.unsafe`DELETE FROM pii_vault.entries`);
    await load(f.pool, strategy, [login("b", "10.3.3.3", "device-cache-a")]);
    expect(await entries()).toBe(0);
    // ...a process that did not write it does.
    await load(f.pool, await createVault(f.pool), [login("c", "10.3.3.3", "device-cache-a")]);
    expect(await entries()).toBe(2);

    // A batch whose transaction rolls back after persisting: its tokens are not remembered.
    const fresh = await createVault(f.pool);
    const [record] = toRecords([login("d", "10.3.3.4", "device-cache-d")]);
    const masked = await maskRecord(fresh, record!);
    await expect(f.pool.transaction(async (tx) => {
      await insertRows(tx, fresh, [masked]);
      throw new Error("rolled back after persisting");
    })).rejects.toThrow("rolled back after persisting");
    await load(f.pool, fresh, [login("d", "10.3.3.4", "device-cache-d")]);
    expect(await entries()).toBe(4);
  });

  it("keeps at most its limit of written tokens, forgetting those not used for longest", () => {
    const recent = createRecentSet(4);
    for (const key of ["a", "b", "c", "d", "e", "f"]) {
      recent.add(key);
      expect(recent.size).toBeLessThanOrEqual(4);
      if (key !== "a") expect(recent.has("a")).toBe(true); // used all along: kept
    }
    // The last added, and the one used all along, are kept; the early ones not used since are gone.
    expect([recent.has("f"), recent.has("a"), recent.has("b"), recent.has("c")]).toEqual([true, true, false, false]);
    expect(recent.size).toBeLessThanOrEqual(4);
  });

  // python3 -c "import hmac,hashlib,base64; print(base64.urlsafe_b64encode(hmac.new(bytes(range(32)),
  //   b'ip\x00199.172.111.135', hashlib.sha256).digest()).decode().rstrip('='))"
  it.each(
    [
      ["ip", "199.172.111.135", "vlt1:YaryXIL5Fi_7Cyun-8PjuUYM75wcNq6lRBryyWe-otM"],
      ["device_id", "593-47-5928", "vlt1:tZ0O9u1UnHzARsMb8RIenI0ZxUvMHUmeGDQuWbwOugo"],
    ] as const,
  )("pins the token of a %s to HMAC-SHA-256 of field NUL value, as Python computes it", (field, value, token) => {
    expect(createToken(Uint8Array.from({ length: 32 }, (_, i) => i), field, value)).toBe(token);
  });

  it.each([
    [{}, /^VAULT_TOKEN_KEY is not set/],
    [{ VAULT_TOKEN_KEY: "short" }, /^VAULT_TOKEN_KEY is 5 bytes; it must be at least 32/],
    [{ VAULT_TOKEN_KEY: TEST_TOKEN_KEY }, /^VAULT_RECOVERY_PUBLIC_KEY is not set/],
    [{ VAULT_TOKEN_KEY: TEST_TOKEN_KEY, VAULT_RECOVERY_PUBLIC_KEY: "abc" }, /^VAULT_RECOVERY_PUBLIC_KEY is not a key/],
    [
      { VAULT_KEY: TEST_TOKEN_KEY, VAULT_KEY_VERSION: "1" },
      /^VAULT_KEY, VAULT_KEY_VERSION belong to the single-key vault this version replaced: remove them/,
    ],
  ])("refuses a bad key setting %j with one line", async (vaultEnv, message) => {
    await expect(loadStrategy("vault", { env: vaultEnv })).rejects.toThrow(message);
    await expect(loadStrategy("vault", { env: vaultEnv })).rejects.toBeInstanceOf(ConfigError);
  });
});

describe("recovery", () => {
  it("refuses a wrong key, at load and at recovery, printing nothing", async () => {
    const strategy = await createVault(f.pool);
    await load(f.pool, strategy, [login("a", "10.20.30.40", "device-wrong-key")]);
    const other = await loadStrategy("vault", {
      env: { ...env, VAULT_RECOVERY_PUBLIC_KEY: OTHER_RECOVERY.VAULT_RECOVERY_PUBLIC_KEY },
    });
    await expect(other.setup!(f.pool)).rejects.toThrow(
      "VAULT_RECOVERY_PUBLIC_KEY is not in the vault keyring (current version 1): set it to the keyring's public key, or add it with sqs-login-masker rotate-vault-key",
    );

    const before = await auditCount();
    const run = await recover([(await tokensOf(f.pool, "a")).ip], {
      VAULT_RECOVERY_KEY: OTHER_RECOVERY.VAULT_RECOVERY_KEY,
    });
    expect(run.code).toBe(2);
    expect(run.stdout).toBe("");
    expect(run.stderr).toBe(
      "error: VAULT_RECOVERY_KEY is not the private key of any version of the vault keyring (current version 1): set it to the recovery key pair's private half\n",
    );
    expect(await auditCount()).toBe(before);
  });

  it("refuses a vault made with the single VAULT_KEY, with one line naming the fix", async () => {
    await createVault(f.pool);
    await f.pool.query(sql.unsafe`COMMENT ON SCHEMA pii_vault IS 'sqs-login-masker vault 2'`);
    await expect(createVault(f.pool)).rejects.toThrow(
      /^Schema pii_vault was made with the single VAULT_KEY, whose holder could both open entries and make tokens: .*vault-keygen/,
    );
  });

  it("refuses a tampered or swapped ciphertext with one line, printing nothing", async () => {
    const strategy = await createVault(f.pool);
    await load(f.pool, strategy, [
      login("a", "10.20.30.41", "device-tamper-a"),
      login("b", "10.20.30.42", "device-tamper-b"),
    ]);
    const a = await tokensOf(f.pool, "a");
    const b = await tokensOf(f.pool, "b");
    await f.pool.query(
      sql
        .unsafe`UPDATE pii_vault.entries SET sealed = set_byte(sealed, 14, get_byte(sealed, 14) # 1) WHERE token = ${a.ip}`,
    );
    const run = await recover([b.ip, a.ip]);
    expect(run.code).toBe(1);
    expect(run.stdout).toBe("");
    expect(run.stderr).toMatch(
      new RegExp(
        `^error: The vault entry for ${a.ip} does not open under key version 1: it was changed or moved`,
      ),
    );
    expect(oneLine(run.stderr)).toBe(true);
    expect(run.stderr).not.toMatch(/10\.20\.30\.4/);

    // A valid ciphertext moved to another entry fails too: the token is associated data.
    await f.pool.query(sql.unsafe`
      UPDATE pii_vault.entries SET sealed = (SELECT sealed FROM pii_vault.entries WHERE token = ${b.device_id})
      WHERE token = ${a.device_id}`);
    await expect(recoverValues(f.pool, recoveryKeys(), { ...asked, tokens: [a.device_id] }))
      .rejects.toBeInstanceOf(VaultError);
  });

  it("audits every recovery before serving it, refuses to run without a reason or ticket, and keeps the log append-only", async () => {
    const strategy = await createVault(f.pool);
    await load(f.pool, strategy, [login("a", "10.20.30.43", "device-audit-a")]);
    const a = await tokensOf(f.pool, "a");

    const noReason = await runTool([a.ip], recoveryEnv, "scripts/recover.ts");
    expect(noReason.code).toBe(2);
    expect(noReason.stdout).toBe("");
    expect(noReason.stderr).toMatch(/^error: No reason given: pass --reason "TEXT"/);
    const noTicket = await runTool(["--reason", "why", a.ip], recoveryEnv, "scripts/recover.ts");
    expect(noTicket.code).toBe(2);
    expect(noTicket.stderr).toMatch(/^error: No ticket given: pass --ticket ID/);
    expect(await auditCount()).toBe(0);

    const run = await runTool(
      ["--reason", "customer asked", "--ticket", "SEC-1", a.ip, a.device_id],
      recoveryEnv,
      "scripts/recover.ts",
    );
    expect(run.code).toBe(0);
    const audit = await f.pool.any(sql.unsafe`
      SELECT action, outcome, reason, ticket, db_user, request_id = first_value(id) OVER (ORDER BY id) AS answers_first, detail
      FROM pii_vault.audit ORDER BY id`);
    expect(audit).toEqual([
      {
        action: "recover",
        outcome: "requested",
        reason: "customer asked",
        ticket: "SEC-1",
        db_user: "postgres",
        answers_first: null,
        detail: "tokens=2",
      },
      {
        action: "recover",
        outcome: "served",
        reason: null,
        ticket: null,
        db_user: "postgres",
        answers_first: true,
        detail: "values=2",
      },
    ]);
    // Not even the owner rewrites history.
    for (
      const statement of [
        sql.unsafe`UPDATE pii_vault.audit SET reason = 'x'`,
        sql.unsafe`DELETE FROM pii_vault.audit`,
        sql.unsafe`TRUNCATE pii_vault.audit`,
      ]
    ) {
      expect(await sqlState(f.pool, statement)).toBe("42501");
    }
    expect(await auditCount()).toBe(2);
  });
});

describe("roles from scripts/vault-roles.sql", () => {
  it("lets the loader load values already in the vault, refuses a role without the grants, and recovers only through the functions", async () => {
    const strategy = await createVault(f.pool);
    await runSqlFile(f.pool, "scripts/vault-roles.sql");
    // Idempotent, and the second run leaves the same grants.
    await runSqlFile(f.pool, "scripts/vault-roles.sql");
    const loaderUrl = await f.createLoginRole("loader", "login_loader");
    const recoveryUrl = await f.createLoginRole("recovery", "pii_recovery");
    const sneakyUrl = await f.createLoginRole("sneaky", "");
    const sneaky = new URL(sneakyUrl).username;
    // Read access without the functions' grants: the tool must refuse rather than recover unaudited.
    await f.pool.query(sql.unsafe`GRANT USAGE ON SCHEMA pii_vault TO ${sql.identifier([sneaky])}`);
    await f.pool.query(sql.unsafe`GRANT SELECT ON pii_vault.entries, pii_vault.keyring TO ${sql.identifier([sneaky])}`);

    // Values already in the vault: the loader's write answers the same, and nothing doubles.
    await load(f.pool, strategy, [login("z", "10.1.1.1", "device-role-a")]);
    await sendBodies(f.sqs, f.queueUrl, [
      login("a", "10.1.1.1", "device-role-a"),
      login("b", "10.1.1.1", "device-role-b"),
    ]);
    const drain = await runTool(["--drain", "--strategy", "vault"], { ...env, DATABASE_URL: loaderUrl });
    expect(drain.stderr).not.toMatch(/^error/m);
    expect(drain.stdout).toMatch(/^loaded=2 /);
    expect(await f.pool.oneFirst(sql.unsafe`SELECT count(*)::int FROM pii_vault.entries`)).toBe(3);

    // A role that may load rows but was not given login_loader: one line with the fix.
    const outsiderUrl = await f.createLoginRole("outsider", "");
    const outsider = new URL(outsiderUrl).username;
    await f.pool.query(sql.unsafe`GRANT INSERT ON user_logins TO ${sql.identifier([outsider])}`);
    await f.pool.query(sql.unsafe`GRANT SELECT, INSERT ON user_logins_sqs_messages TO ${sql.identifier([outsider])}`);
    await f.pool.query(sql.unsafe`GRANT SELECT ON user_logins_mask TO ${sql.identifier([outsider])}`);
    const refused = await runTool(["--drain", "--strategy", "vault"], { ...env, DATABASE_URL: outsiderUrl });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(
      new RegExp(
        `^error: Role ${outsider} may not use the vault \\(42501 permission denied for schema pii_vault\\): GRANT login_loader TO ${outsider}; see sqs-login-masker vault-roles\n$`,
        "m",
      ),
    );

    const a = await tokensOf(f.pool, "a");
    const sneakyRun = await recover([a.ip], { DATABASE_URL: sneakyUrl });
    expect(sneakyRun.code).toBe(1);
    expect(sneakyRun.stdout).toBe("");
    expect(sneakyRun.stderr).toMatch(/^error: Permission denied at .*sqs-login-masker vault-roles/);
    expect(await auditCount()).toBe(0);

    const run = await recover(["--user-id", "a"], { DATABASE_URL: recoveryUrl });
    expect(run.stderr).toBe("");
    expect(run.stdout).toBe(`ip\t${a.ip}\t10.1.1.1\ndevice_id\t${a.device_id}\tdevice-role-a\n`);
    expect(await f.pool.anyFirst(sql.unsafe`SELECT DISTINCT db_user FROM pii_vault.audit`)).toEqual([
      new URL(recoveryUrl).username,
    ]);
  });
});

describe("erasure", () => {
  it("deletes every entry of the user's values, shared ones too (counted), and recovery then fails clearly", async () => {
    const strategy = await createVault(f.pool);
    await load(f.pool, strategy, [
      login("gone", "172.16.0.9", "device-gone-1"),
      login("gone", "172.16.0.10", "device-gone-1"),
      login("housemate", "172.16.0.9", "device-housemate"),
    ]);
    const gone = await tokensOf(f.pool, "gone");
    const goneDevice = gone.device_id;
    const housemate = await tokensOf(f.pool, "housemate");

    const run = await runTool(
      ["--user-id", "gone", "--reason", "GDPR request", "--ticket", "ER-7"],
      env,
      "scripts/forget.ts",
    );
    expect(run.stderr).toBe("");
    expect(run.stdout).toBe("forgotten: rows=2 vault_entries_deleted=3 also_in_other_users_rows=1\n");
    const rows = (await readRows(f.pool)).filter((r) => r.user_id === "gone");
    expect(rows.map((r) => [r.masked_ip, r.masked_device_id])).toEqual([[ERASED_MARKER, ERASED_MARKER], [
      ERASED_MARKER,
      ERASED_MARKER,
    ]]);

    const byUser = await recover(["--user-id", "gone"]);
    expect(byUser.code).toBe(1);
    expect(byUser.stdout).toBe("");
    expect(byUser.stderr).toBe(
      'error: User "gone" has no vault tokens in user_logins: erased by sqs-login-masker forget, or loaded with another strategy\n',
    );
    const byToken = await recover([goneDevice]);
    expect(byToken.code).toBe(1);
    expect(byToken.stdout).toBe("");
    expect(byToken.stderr).toBe(
      `error: 1 token(s) not in the vault (erased by sqs-login-masker forget, or never stored): ${goneDevice}\n`,
    );

    // The shared address went too: the housemate's row keeps its token, whose value is erased.
    expect(housemate.ip).toBe(gone.ip);
    await expect(recoverValues(f.pool, recoveryKeys(), { ...asked, userId: "housemate" })).rejects.toThrow(
      `1 token(s) not in the vault (erased by sqs-login-masker forget, or never stored): ${housemate.ip}`,
    );
    expect(await recoverValues(f.pool, recoveryKeys(), { ...asked, tokens: [housemate.device_id] })).toEqual([
      { field: "device_id", token: housemate.device_id, value: "device-housemate" },
    ]);
    const audit = await f.pool.one(
      sql.unsafe`SELECT action, outcome, reason, ticket, user_id, detail FROM pii_vault.audit WHERE action = 'forget'`,
    );
    expect(audit).toEqual({
      action: "forget",
      outcome: "done",
      reason: "GDPR request",
      ticket: "ER-7",
      user_id: "gone",
      detail: "rows=2 entries_deleted=3 also_in_other_users_rows=1",
    });

    await expect(forgetUser(f.pool, { userId: "nobody", ...asked })).rejects.toThrow(
      'No rows for user_id "nobody" in user_logins: nothing to forget',
    );
  });
});

describe("key rotation", () => {
  it("re-encrypts every entry under the new key, keeps the tokens, and retires the old version", async () => {
    const strategy = await createVault(f.pool);
    const bodies = [login("a", "192.0.2.1", "device-rotate-a"), login("b", "192.0.2.2", "device-rotate-b")];
    await load(f.pool, strategy, bodies);
    const before = await readRows(f.pool);
    // The admin: the old private key and the new public one; no token key.
    const rotateEnv = {
      ...f.env,
      VAULT_PREVIOUS_RECOVERY_KEY: TEST_RECOVERY.VAULT_RECOVERY_KEY,
      VAULT_RECOVERY_PUBLIC_KEY: OTHER_RECOVERY.VAULT_RECOVERY_PUBLIC_KEY,
    };

    const run = await runTool(["--reason", "yearly", "--batch-size", "3"], rotateEnv, "scripts/rotate-vault-key.ts");
    expect(run.stderr).toBe("");
    expect(run.stdout).toBe("rotated: reencrypted=4 from_version=1 to_version=2 previous_version_retired\n");
    expect(await f.pool.anyFirst(sql.unsafe`SELECT DISTINCT key_version FROM pii_vault.entries`)).toEqual([2]);
    expect(await f.pool.anyFirst(sql.unsafe`SELECT key_version FROM pii_vault.keyring WHERE emptied_at IS NULL`))
      .toEqual([2]);

    const newKeyEnv = { ...env, VAULT_RECOVERY_PUBLIC_KEY: OTHER_RECOVERY.VAULT_RECOVERY_PUBLIC_KEY };
    const rotated = await createVault(f.pool, newKeyEnv);
    expect(await rotated.mask("192.0.2.1", "ip")).toBe(before.find((r) => r.user_id === "a")!.masked_ip);
    const recovered = await recoverValues(f.pool, recoveryKeys(OTHER_RECOVERY), { ...asked, userId: "b" });
    expect(recovered.map((v) => v.value)).toEqual(["192.0.2.2", "device-rotate-b"]);

    await expect(createVault(f.pool, env)).rejects.toThrow(
      "VAULT_RECOVERY_PUBLIC_KEY is keyring version 1, retired by a key rotation: set it to the public key of a current version (2)",
    );
    const oldKey = await recover(["--user-id", "b"]);
    expect(oldKey.code).toBe(2);
    expect(oldKey.stderr).toBe(
      "error: VAULT_RECOVERY_KEY is not the private key of any version of the vault keyring (current version 2): set it to the recovery key pair's private half\n",
    );
    expect(
      await f.pool.anyFirst(
        sql.unsafe`SELECT outcome || ' ' || detail FROM pii_vault.audit WHERE action = 'rotate' ORDER BY id`,
      ),
    )
      .toEqual(["done added=2", "requested from=1 to=2", "done from=1 to=2 reencrypted=4 retired=true"]);
    // Run again: nothing left to do, and it says so.
    const again = await runTool(["--reason", "yearly"], rotateEnv, "scripts/rotate-vault-key.ts");
    expect(again.stdout).toBe("rotated: reencrypted=0 from_version=1 to_version=2 previous_version_retired\n");
  });
});

describe("a mixed batch drained by the CLI with --strategy vault", () => {
  it("loads tokens, keeps no raw value anywhere in the database, and recover.ts prints the originals", async () => {
    const valid = [...sampleBodies(40, 0, 21), ...EDGE_CASE_BODIES];
    await sendBodies(f.sqs, f.queueUrl, [...valid, ...INVALID_BODIES.map((i) => i.body)]);
    const drain = await runTool(["--drain", "--strategy", "vault", "--log-level", "debug"], env);
    expect(drain.stderr).not.toMatch(/^error/m);
    expect(drain.code).toBe(0);
    expect(drain.stdout).toMatch(/^loaded=46 duplicates=0 dead_lettered=10 left_in_queue=0/);

    const messages = valid.map((b) => JSON.parse(b) as { user_id: string; ip: string; device_id: string });
    const rows = await readRows(f.pool);
    expect(rows).toHaveLength(messages.length);
    for (const row of rows) expect(isToken(row.masked_ip) && isToken(row.masked_device_id)).toBe(true);

    // Every text-like column of every user table, in every schema.
    const raw = [...new Set(messages.flatMap((m) => [m.ip, m.device_id]))];
    const columns = await f.pool.any(sql.unsafe`
      SELECT table_schema, table_name, column_name FROM information_schema.columns
      WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_schema NOT LIKE 'pg_toast%'
        AND data_type IN ('text', 'character varying', 'character', 'json', 'jsonb', 'ARRAY', 'USER-DEFINED', 'bytea')`);
    expect(
      columns.map((c) => `${(c as { table_schema: string }).table_schema}.${(c as { table_name: string }).table_name}`),
    ).toEqual(expect.arrayContaining(["pii_vault.entries", "public.user_logins"]));
    for (const { table_schema, table_name, column_name } of columns as Array<Record<string, string>>) {
      const cells = await f.pool.anyFirst(sql.unsafe`
        SELECT ${sql.identifier([column_name!])}::text FROM ${sql.identifier([table_schema!, table_name!])}`);
      for (const cell of cells) {
        if (cell === null) continue;
        for (const value of raw) {
          if (cell === value || (value.length >= 6 && (cell as string).includes(value))) {
            throw new Error(`${table_schema}.${table_name}.${column_name} holds a raw value`);
          }
        }
      }
    }
    const printed = drain.stdout + drain.stderr;
    for (const value of raw.filter((v) => v.length >= 6)) expect(printed).not.toContain(value);

    const tokens = [...new Set(rows.flatMap((r) => [r.masked_ip, r.masked_device_id]))];
    const run = await recover(tokens);
    expect(run.stderr).toBe("");
    const recovered = new Map(
      run.stdout.trim().split("\n").map((line) => {
        const [, token, value] = line.split("\t");
        return [token!, value!] as const;
      }),
    );
    expect(recovered.size).toBe(tokens.length);
    for (const m of messages) {
      const row = rows.find((r) => r.user_id === m.user_id)!;
      expect(recovered.get(row.masked_ip)).toBe(m.ip);
      expect(recovered.get(row.masked_device_id)).toBe(m.device_id);
    }

    const byUser = await recover(["--user-id", "edge-unicode"]);
    const edge = rows.find((r) => r.user_id === "edge-unicode")!;
    expect(byUser.stdout).toBe(`ip\t${edge.masked_ip}\t8.8.8.8\ndevice_id\t${edge.masked_device_id}\tустройство-ü-✓\n`);
    expect(await f.pool.oneFirst(sql.unsafe`SELECT count(*)::int FROM pii_vault.audit WHERE outcome = 'requested'`))
      .toBe(2);
  });
});

describe("deno run -A mod.ts --strategy vault", () => {
  it("writes the same tokens and recoverable entries as under Node", async () => {
    const strategy = await createVault(f.pool);
    const bodies = [login("deno-a", "203.0.113.7", "device-deno-a"), login("deno-b", "203.0.113.8", "device-deno-b")];
    await sendBodies(f.sqs, f.queueUrl, bodies);
    const run = await runDeno(["--drain", "--strategy", "vault"], env);
    expect(run.stderr).not.toMatch(/^error/m);
    expect(run.stdout).toMatch(/^loaded=2 /);
    const a = await tokensOf(f.pool, "deno-a");
    expect(a.ip).toBe(await strategy.mask("203.0.113.7", "ip"));
    const recovered = await recoverValues(f.pool, recoveryKeys(), { ...asked, userId: "deno-b" });
    expect(recovered.map((v) => v.value)).toEqual(["203.0.113.8", "device-deno-b"]);
  });
});
