/**
 * One table, one mask (DESIGN promise 8): the strategy and key fingerprint that masked
 * `user_logins` are recorded beside it at the first run and checked by every run before
 * anything loads; a table from 0.1.x is adopted; a new key gets a table of its own
 * (the README's rotation procedure, followed here); `scripts/ipcrypt.ts decrypt
 * --database-url` refuses a key that is not the table's. On the emulator and Postgres.
 */
import { randomBytes } from "node:crypto";
import { sql } from "slonik";
import { describe, expect, it } from "vitest";
import { ensureSchema, keyFingerprint, loadStrategy, type MaskStrategy } from "../mod.ts";
import { sampleBodies, sampleLogin, seededRandom, sendBodies } from "../scripts/produce.ts";
import { createIpCipher } from "../strategies/_ipcrypt.ts";
import { canonicalIp } from "../src/ip.ts";
import { TEST_RECOVERY } from "./vault-fixture.ts";
import {
  countRows,
  createFixture,
  type Fixture,
  queueDepth,
  readRows,
  type RunResult,
  runTool,
  TEST_HMAC_KEY,
} from "./helpers.ts";

const OTHER_HMAC_KEY = "o".repeat(32) + "-another-test-key";
const IPCRYPT_KEY = "2b7e151628aed2a6abf7158809cf4f3c";
const PFX_KEY = "2b7e151628aed2a6abf7158809cf4f3ca9f5ba40db214c3798f2e1c23456789a";
const OTHER_PFX_KEY = "0123456789abcdeffedcba98765432101032547698badcfeefcdab8967452301";
const VAULT_TOKEN_KEY = "v".repeat(32) + "-vault-test-key";
const FINGERPRINT = "[0-9a-f]{32}";

const drain = (f: Fixture, strategy: string, env: Record<string, string> = {}) =>
  runTool(["--drain", "--strategy", strategy], { ...f.env, ...env });

/** The refusal a run gets: one line naming both masks, exit 2, nothing loaded, no key printed. */
function expectRefused(run: RunResult, table: string, mine: string, keys: readonly string[] = []): void {
  expect(run.stdout).toBe("");
  expect(run.stderr.trim().split("\n"), run.stderr).toHaveLength(1);
  expect(run.stderr).toMatch(
    new RegExp(`^error: public\\.user_logins is masked by ${table}; this run's mask is ${mine}: .*own table`),
  );
  for (const key of keys) expect(run.stderr).not.toContain(key);
  expect(run.code).toBe(2);
}

async function readRecord(f: Fixture, schema = "public") {
  return await f.pool.maybeOne(sql.unsafe`
    SELECT strategy, fingerprint, adopted FROM ${sql.identifier([schema, "user_logins_mask"])}`) as
    | { strategy: string; fingerprint: string | null; adopted: boolean }
    | null;
}

describe("the recorded mask", () => {
  it("loads hmac under key A twice; refuses key B, sha256, ipcrypt and ipcrypt-pfx with one line and loads nothing", async () => {
    const f = await createFixture();
    try {
      await sendBodies(f.sqs, f.queueUrl, sampleBodies(5, 0, 1));
      const first = await drain(f, "hmac");
      expect(first.stderr).not.toMatch(/^error/m);
      expect(first.stdout).toMatch(/^loaded=5 /);
      await sendBodies(f.sqs, f.queueUrl, sampleBodies(5, 0, 2));
      const again = await drain(f, "hmac");
      expect(again.stderr).not.toMatch(/^error/m);
      expect(again.stdout).toMatch(/^loaded=5 /);
      expect(await countRows(f.pool)).toBe(10);

      await sendBodies(f.sqs, f.queueUrl, sampleBodies(5, 0, 3));
      const table = `hmac \\(fingerprint ${FINGERPRINT}\\)`;
      const otherKey = await drain(f, "hmac", { MASK_HMAC_KEY: OTHER_HMAC_KEY });
      expectRefused(otherKey, table, `hmac \\(fingerprint ${FINGERPRINT}\\)`, [OTHER_HMAC_KEY, TEST_HMAC_KEY]);
      expectRefused(await drain(f, "sha256"), table, "sha256 \\(no key\\)");
      expectRefused(
        await drain(f, "ipcrypt", { MASK_IPCRYPT_KEY: IPCRYPT_KEY }),
        table,
        `ipcrypt \\(fingerprint ip:${FINGERPRINT} device_id:${FINGERPRINT}\\)`,
        [IPCRYPT_KEY],
      );
      expectRefused(
        await drain(f, "ipcrypt-pfx", { MASK_IPCRYPT_KEY: PFX_KEY }),
        table,
        `ipcrypt-pfx \\(fingerprint ip:${FINGERPRINT} device_id:${FINGERPRINT}\\)`,
        [PFX_KEY],
      );
      expect(await countRows(f.pool)).toBe(10);
      expect(await queueDepth(f.sqs, f.queueUrl)).toBe(5);

      // The record names the table's side of each refusal; device_id's part is hmac's own.
      const record = await readRecord(f);
      expect(record).toEqual({
        strategy: "hmac",
        fingerprint: expect.stringMatching(`^${FINGERPRINT}$`),
        adopted: false,
      });
      expect(otherKey.stderr).toContain(`masked by hmac (fingerprint ${record!.fingerprint});`);
      expect(otherKey.stderr).not.toContain(`this run's mask is hmac (fingerprint ${record!.fingerprint})`);
    } finally {
      await f.close();
    }
  });

  it("adopts a table loaded before the record existed, with one line, then holds it to that mask", async () => {
    const f = await createFixture();
    try {
      // What 0.1.x left: the tables, rows, and no record.
      await ensureSchema(f.pool);
      await f.pool.query(sql.unsafe`
        INSERT INTO user_logins VALUES ('old-user', 'ios', 'aa', 'bb', 'US', 10203, '2026-01-01')`);
      await sendBodies(f.sqs, f.queueUrl, sampleBodies(5, 0, 4));
      const adopting = await drain(f, "hmac");
      expect(adopting.stderr).not.toMatch(/^error/m);
      expect(adopting.stdout).toMatch(/^loaded=5 /);
      const lines = adopting.stderr.split("\n").filter((line) => line.includes("before its mask was recorded"));
      expect(lines, adopting.stderr).toHaveLength(1);
      expect(lines[0]).toMatch(/"level":"warn"/);
      expect(await readRecord(f)).toMatchObject({ strategy: "hmac", adopted: true });

      const next = await drain(f, "hmac");
      expect(next.code).toBe(0);
      expect(next.stderr).not.toContain("before its mask was recorded");
      expectRefused(await drain(f, "hmac", { MASK_HMAC_KEY: OTHER_HMAC_KEY }), "hmac .*", "hmac .*");
      expect(await countRows(f.pool)).toBe(6);
    } finally {
      await f.close();
    }
  });

  it("says how to start over when the refused table holds no rows, and records anew once the owner has", async () => {
    const f = await createFixture();
    try {
      // A first run with the wrong key on an empty queue: the record is made, no row.
      expect((await drain(f, "hmac", { MASK_HMAC_KEY: OTHER_HMAC_KEY })).code).toBe(0);
      await sendBodies(f.sqs, f.queueUrl, sampleBodies(3, 0, 13));
      const refused = await drain(f, "hmac");
      expectRefused(refused, "hmac .*", "hmac .*");
      expect(refused.stderr).toMatch(
        /; public\.user_logins holds no rows: to mask it this way instead, have its owner DELETE FROM public\.user_logins_mask first\n$/,
      );
      await f.pool.query(sql.unsafe`DELETE FROM user_logins_mask`);
      const loaded = await drain(f, "hmac");
      expect(loaded.stdout).toMatch(/^loaded=3 /);
      expect(await readRecord(f)).toEqual({
        strategy: "hmac",
        fingerprint: keyFingerprint(TEST_HMAC_KEY),
        adopted: false,
      });
      // With rows in it, no such advice.
      expect((await drain(f, "hmac", { MASK_HMAC_KEY: OTHER_HMAC_KEY })).stderr).not.toContain("holds no rows");
    } finally {
      await f.close();
    }
  });

  it("tells a loading role that may not create the record what to grant, and loads once it may read it", async () => {
    const f = await createFixture();
    const role = `loader_${randomBytes(3).toString("hex")}`;
    await f.pool.query(sql.unsafe`CREATE ROLE ${sql.identifier([role])} LOGIN PASSWORD 'loader'`);
    try {
      await ensureSchema(f.pool);
      // A loading role handed the tables, without CREATE on the schema (Postgres 15's default).
      await f.pool.query(sql.unsafe`REVOKE CREATE ON SCHEMA public FROM PUBLIC`);
      await f.pool.query(sql.unsafe`GRANT INSERT ON user_logins TO ${sql.identifier([role])}`);
      await f.pool.query(sql.unsafe`GRANT SELECT, INSERT ON user_logins_sqs_messages TO ${sql.identifier([role])}`);
      await f.pool.query(
        sql.unsafe`GRANT EXECUTE ON FUNCTION user_logins_sqs_messages_prune() TO ${sql.identifier([role])}`,
      );
      const url = new URL(f.databaseUrl);
      url.username = role;
      url.password = "loader";
      await sendBodies(f.sqs, f.queueUrl, sampleBodies(3, 0, 5));
      const refused = await drain(f, "hmac", { DATABASE_URL: url.toString() });
      expect(refused.code).toBe(1);
      expect(refused.stderr).toBe(
        `error: Table public.user_logins_mask, which records the mask of public.user_logins, does not exist and role ${role} may not create it: run the tool once as the owner of user_logins, then GRANT SELECT ON public.user_logins_mask TO ${role}\n`,
      );
      expect(await countRows(f.pool)).toBe(0);

      const owner = await drain(f, "hmac");
      expect(owner.stdout).toMatch(/^loaded=3 /);
      await sendBodies(f.sqs, f.queueUrl, sampleBodies(3, 0, 6));
      const unreadable = await drain(f, "hmac", { DATABASE_URL: url.toString() });
      expect(unreadable.stderr).toBe(
        `error: Role ${role} may not read public.user_logins_mask, the mask of public.user_logins: GRANT SELECT ON public.user_logins_mask TO ${role}\n`,
      );
      await f.pool.query(sql.unsafe`GRANT SELECT ON user_logins_mask TO ${sql.identifier([role])}`);
      const loaded = await drain(f, "hmac", { DATABASE_URL: url.toString() });
      expect(loaded.stderr).not.toMatch(/^error/m);
      expect(loaded.stdout).toMatch(/^loaded=3 /);
    } finally {
      await f.pool.query(sql.unsafe`DROP OWNED BY ${sql.identifier([role])}`);
      await f.pool.query(sql.unsafe`DROP ROLE ${sql.identifier([role])}`);
      await f.close();
    }
  });

  it("records a user's strategy by name, warns when it gives no fingerprint, and checks the one it gives", async () => {
    const f = await createFixture();
    try {
      await sendBodies(f.sqs, f.queueUrl, sampleBodies(3, 0, 7));
      const keyed = await drain(f, "tests/fixtures/keyed-strategy.ts", { KEYED_STRATEGY_KEY: "first key" });
      expect(keyed.stderr).not.toMatch(/^error/m);
      expect(keyed.code).toBe(0);
      expect(keyed.stderr).not.toContain("gives no fingerprint");
      expect(await readRecord(f)).toEqual({
        strategy: "keyed",
        fingerprint: keyFingerprint("first key"),
        adopted: false,
      });
      expectRefused(
        await drain(f, "tests/fixtures/keyed-strategy.ts", { KEYED_STRATEGY_KEY: "second key" }),
        `keyed \\(fingerprint ${keyFingerprint("first key")}\\)`,
        `keyed \\(fingerprint ${keyFingerprint("second key")}\\)`,
        ["first key", "second key"],
      );
      expectRefused(
        await drain(f, "tests/fixtures/reverse-strategy.ts"),
        "keyed .*",
        "reverse-sha256 \\(no fingerprint\\)",
      );

      const g = await createFixture();
      try {
        const unkeyed = await drain(g, "tests/fixtures/reverse-strategy.ts");
        expect(unkeyed.code).toBe(0);
        const warnings = unkeyed.stderr.split("\n").filter((line) => line.includes("gives no fingerprint"));
        expect(warnings, unkeyed.stderr).toHaveLength(1);
        expect(warnings[0]).toMatch(/"level":"warn".*a change of its key cannot be detected/);
        expect(await readRecord(g)).toEqual({ strategy: "reverse-sha256", fingerprint: null, adopted: false });
      } finally {
        await g.close();
      }
    } finally {
      await f.close();
    }
  });

  it("refuses a vault whose token key is another, and takes one made anew under the same token key", async () => {
    const f = await createFixture();
    try {
      const env = { VAULT_TOKEN_KEY, VAULT_RECOVERY_PUBLIC_KEY: TEST_RECOVERY.VAULT_RECOVERY_PUBLIC_KEY };
      await sendBodies(f.sqs, f.queueUrl, sampleBodies(3, 0, 8));
      const first = await drain(f, "vault", env);
      expect(first.stdout).toMatch(/^loaded=3 /);
      expect((await drain(f, "vault", env)).code).toBe(0);
      // Tokens come from VAULT_TOKEN_KEY alone: a vault made anew under it makes the same tokens.
      await f.pool.query(sql.unsafe`ALTER SCHEMA pii_vault RENAME TO pii_vault_old`);
      await sendBodies(f.sqs, f.queueUrl, sampleBodies(3, 0, 9));
      expect((await drain(f, "vault", env)).stdout).toMatch(/^loaded=3 /);
      // Another token key: refused before anything loads, and no key is echoed.
      const otherKey = "o".repeat(40);
      await sendBodies(f.sqs, f.queueUrl, sampleBodies(3, 0, 10));
      const other = await drain(f, "vault", { ...env, VAULT_TOKEN_KEY: otherKey });
      expectRefused(other, `vault \\(fingerprint ${FINGERPRINT}\\)`, `vault \\(fingerprint ${FINGERPRINT}\\)`, [
        VAULT_TOKEN_KEY,
        otherKey,
      ]);
      expect(await countRows(f.pool)).toBe(6);
      const record = await readRecord(f);
      expect(record).toMatchObject({ strategy: "vault", fingerprint: expect.stringMatching(`^${FINGERPRINT}$`) });
      expect(other.stderr).toContain(`masked by vault (fingerprint ${record!.fingerprint});`);
    } finally {
      await f.close();
    }
  });
});

describe("changing a key: a table of its own, as the README says", () => {
  it("loads key B into its own schema beside key A's table, sharing the ledger, joined by a view", async () => {
    const f = await createFixture();
    try {
      await sendBodies(f.sqs, f.queueUrl, sampleBodies(4, 0, 10));
      expect((await drain(f, "hmac")).stdout).toMatch(/^loaded=4 /);

      await f.pool.query(sql.unsafe`CREATE SCHEMA user_logins_2`);
      await f.pool.query(sql.unsafe`CREATE TABLE user_logins_2.user_logins (LIKE public.user_logins INCLUDING ALL)`);
      const url = new URL(f.databaseUrl);
      url.searchParams.set("options", "-c search_path=user_logins_2,public");
      await sendBodies(f.sqs, f.queueUrl, sampleBodies(6, 0, 11));
      const rotated = await drain(f, "hmac", { MASK_HMAC_KEY: OTHER_HMAC_KEY, DATABASE_URL: url.toString() });
      expect(rotated.stderr).not.toMatch(/^error/m);
      expect(rotated.stdout).toMatch(/^loaded=6 /);

      expect(await countRows(f.pool)).toBe(4);
      expect(await f.pool.oneFirst(sql.unsafe`SELECT count(*)::int FROM user_logins_2.user_logins`)).toBe(6);
      // One ledger for both: a message loaded under either key is never loaded again.
      expect(await f.pool.oneFirst(sql.unsafe`SELECT count(*)::int FROM public.user_logins_sqs_messages`)).toBe(10);
      expect(await f.pool.maybeOneFirst(sql.unsafe`SELECT to_regclass('user_logins_2.user_logins_sqs_messages')`))
        .toBeNull();

      // Key A against the new table, or key B against the old one: refused.
      const wrong = await drain(f, "hmac", { DATABASE_URL: url.toString() });
      expect(wrong.code).toBe(2);
      expect(wrong.stderr).toMatch(/^error: user_logins_2\.user_logins is masked by hmac/);
      expect((await drain(f, "hmac", { MASK_HMAC_KEY: OTHER_HMAC_KEY })).code).toBe(2);
      const [a, b] = [await readRecord(f), await readRecord(f, "user_logins_2")];
      expect(a).toMatchObject({ strategy: "hmac" });
      expect(b).toMatchObject({ strategy: "hmac", adopted: false });
      expect(b!.fingerprint).not.toBe(a!.fingerprint);

      await f.pool.query(sql.unsafe`
        CREATE VIEW user_logins_all AS
          SELECT 1 AS mask_version, * FROM public.user_logins
          UNION ALL SELECT 2, * FROM user_logins_2.user_logins`);
      expect(
        await f.pool.any(sql.unsafe`
          SELECT mask_version, count(*)::int AS logins FROM user_logins_all GROUP BY 1 ORDER BY 1`),
      ).toEqual([{ mask_version: 1, logins: 4 }, { mask_version: 2, logins: 6 }]);
    } finally {
      await f.close();
    }
  });
});

describe("fingerprints", () => {
  const load = (name: string, env: Record<string, string>) =>
    loadStrategy(name, { env: { MASK_HMAC_KEY: TEST_HMAC_KEY, ...env } });
  const fingerprintOf = (strategy: MaskStrategy) => strategy.fingerprint;

  it("are what they were: a known answer, since a change would refuse every recorded table", () => {
    expect(keyFingerprint("a".repeat(64))).toBe("01c96c0d47d9243430a8d378de1d2fd8");
    expect(keyFingerprint(new Uint8Array(32).fill(7))).toBe("09e78d54dc8dd74042ec3682def23813");
  });

  it("are the same for the same key, differ for another, and show nothing of the key", async () => {
    const a = keyFingerprint(TEST_HMAC_KEY);
    expect(a).toMatch(new RegExp(`^${FINGERPRINT}$`));
    expect(keyFingerprint(new TextEncoder().encode(TEST_HMAC_KEY))).toBe(a);
    expect(keyFingerprint(OTHER_HMAC_KEY)).not.toBe(a);
    expect(fingerprintOf(await load("hmac", {}))).toBe(a);
    expect(fingerprintOf(await load("hmac", { MASK_HMAC_KEY: OTHER_HMAC_KEY }))).toBe(keyFingerprint(OTHER_HMAC_KEY));
    // Not the key, nor any hash of it that a mask could be (the mask of the key as a value).
    const hmac = await load("hmac", {});
    expect(a).not.toContain(Buffer.from(TEST_HMAC_KEY).toString("hex").slice(0, 8));
    expect((await hmac.mask(TEST_HMAC_KEY, "ip")).slice(0, 32)).not.toBe(a);
    expect(fingerprintOf(await load("sha256", {}))).toBeNull();
  });

  it("cover both keys of ipcrypt and ipcrypt-pfx, and read hex in either case as one key", async () => {
    for (const [name, key] of [["ipcrypt", IPCRYPT_KEY], ["ipcrypt-pfx", PFX_KEY]] as const) {
      const base = fingerprintOf(await load(name, { MASK_IPCRYPT_KEY: key }));
      expect(base).toBe(`ip:${keyFingerprint(Buffer.from(key, "hex"))} device_id:${keyFingerprint(TEST_HMAC_KEY)}`);
      expect(fingerprintOf(await load(name, { MASK_IPCRYPT_KEY: key.toUpperCase() }))).toBe(base);
      expect(fingerprintOf(await load(name, { MASK_IPCRYPT_KEY: key, MASK_HMAC_KEY: OTHER_HMAC_KEY }))).not.toBe(base);
    }
    expect(fingerprintOf(await load("ipcrypt-pfx", { MASK_IPCRYPT_KEY: OTHER_PFX_KEY }))).not.toBe(
      fingerprintOf(await load("ipcrypt-pfx", { MASK_IPCRYPT_KEY: PFX_KEY })),
    );
  });
});

describe("scripts/ipcrypt.ts decrypt --database-url", () => {
  const decrypt = (args: readonly string[], key: string) =>
    runTool(["decrypt", ...args], { MASK_IPCRYPT_KEY: key }, "scripts/ipcrypt.ts");

  it("gives the originals under the table's key, and refuses another key or mode with one line and no address", async () => {
    const f = await createFixture();
    try {
      const random = seededRandom(12);
      const logins: Array<Record<string, unknown>> = Array.from(
        { length: 4 },
        (_, i) => ({ ...sampleLogin(random), user_id: `pfx-${i}` }),
      );
      await sendBodies(f.sqs, f.queueUrl, logins.map((login) => JSON.stringify(login)));
      const run = await drain(f, "ipcrypt-pfx", { MASK_IPCRYPT_KEY: PFX_KEY });
      expect(run.stdout).toMatch(/^loaded=4 /);
      const masked = (await readRows(f.pool)).map((row) => row.masked_ip);
      const originals = logins.map((login) => `${canonicalIp(login.ip as string)}\n`).join("");

      const right = await decrypt(["--database-url", f.databaseUrl, "--mode", "pfx", ...masked], PFX_KEY);
      expect(right.stderr).toBe("");
      expect(right.code).toBe(0);
      expect(right.stdout).toBe(originals);

      // A wrong key of the right length decrypts to plausible addresses: none may be printed.
      const plausible = masked.map((m) => createIpCipher("pfx", Buffer.from(OTHER_PFX_KEY, "hex")).decrypt(m));
      const wrong = await decrypt(["--database-url", f.databaseUrl, "--mode", "pfx", ...masked], OTHER_PFX_KEY);
      expect(wrong.stdout).toBe("");
      expect(wrong.stderr).toMatch(
        new RegExp(
          `^error: MASK_IPCRYPT_KEY is not the key public\\.user_logins was masked with \\(its fingerprint ip:${FINGERPRINT}, this key's ip:${FINGERPRINT}\\): nothing decrypted\n$`,
        ),
      );
      for (const address of [...plausible, ...originals.split("\n").filter(Boolean)]) {
        expect(wrong.stderr).not.toContain(address);
      }
      expect(wrong.stderr).not.toContain(OTHER_PFX_KEY);
      expect(wrong.code).toBe(2);

      const mode = await decrypt(["--database-url", f.databaseUrl, "--mode", "deterministic", ...masked], IPCRYPT_KEY);
      expect(mode.stdout).toBe("");
      expect(mode.stderr).toBe(
        "error: public.user_logins is masked by ipcrypt-pfx, not ipcrypt: --mode deterministic decrypts rows written with --strategy ipcrypt; nothing decrypted\n",
      );
      expect(mode.code).toBe(2);
    } finally {
      await f.close();
    }
  });

  it("refuses a table without a recorded mask, and without --database-url says the key is not checked", async () => {
    const f = await createFixture();
    try {
      await ensureSchema(f.pool);
      const unrecorded = await decrypt(["--database-url", f.databaseUrl, "--mode", "pfx", "19.214.210.244"], PFX_KEY);
      expect(unrecorded.stdout).toBe("");
      expect(unrecorded.stderr).toBe(
        "error: user_logins has no recorded mask to check MASK_IPCRYPT_KEY against: run the loader on it once (it records its mask), or decrypt without --database-url at your own risk\n",
      );
      expect(unrecorded.code).toBe(2);

      const unchecked = await decrypt(["--mode", "pfx", "19.214.210.244"], OTHER_PFX_KEY);
      expect(unchecked.code).toBe(0);
      expect(unchecked.stdout).toMatch(/^[0-9.]+\n$/);
      expect(unchecked.stderr).toBe(
        "warning: MASK_IPCRYPT_KEY was not checked (no --database-url or DATABASE_URL): a wrong key of the right length prints wrong addresses that look right\n",
      );
      const help = await runTool(["--help"], {}, "scripts/ipcrypt.ts");
      expect(help.stdout).toMatch(/--database-url URL/);
      expect(help.stdout).toMatch(/Without --database-url nothing checks the key/);
    } finally {
      await f.close();
    }
  });
});
