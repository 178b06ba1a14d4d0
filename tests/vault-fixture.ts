/**
 * What the vault's tests share: a vault made as the database owner, loading straight
 * through the sink, `scripts/vault-roles.sql` run as psql would, and login roles in its
 * group roles, each cleaned up after the test.
 */
import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { type DatabasePool, sql } from "slonik";
import {
  createDatabasePool,
  decodeMessage,
  ensureMaskRecord,
  ensureSchema,
  loadStrategy,
  type LoginRecord,
  maskRecord,
  type MaskStrategy,
} from "../mod.ts";
import { writeBatch, type WriteOutcome } from "../src/write-batch.ts";
import { createFixture, type Fixture, readRows, ROOT } from "./helpers.ts";

/** The loader's: makes tokens. Test-only keys, made with `vault-keygen`. */
export const TEST_TOKEN_KEY = "v".repeat(32) + "-vault-test-only-token-key";
/** A recovery key pair: the loader gets the public half, recovery the private one. */
export const TEST_RECOVERY = {
  VAULT_RECOVERY_PUBLIC_KEY: "GQBZrM22bS4e3ih0NUoJSMIzgi-i6LAdqHmIZlCH3nk",
  VAULT_RECOVERY_KEY: "SJGTabLMwRZ_mBetfTI3SIx6ehcAYA3wohnZnzbR-3c",
};
/** Another pair, to rotate to. */
export const OTHER_RECOVERY = {
  VAULT_RECOVERY_PUBLIC_KEY: "uxNKg6SdtGe45nDdeUqcNIFfhvKZ4B7Fya3Ub6259Es",
  VAULT_RECOVERY_KEY: "SKUfYmb7LUJkNkxQTTSzmZli5xPnYvpFhtrrNKPIwUE",
};

/** A test's queue pair and database, with the vault's key, and the roles it made. */
export interface VaultFixture extends Fixture {
  /** The loader's environment: the token key and the recovery public key. */
  vaultEnv: Record<string, string>;
  /** The recovery role's: the recovery private key, and no token key. */
  recoveryEnv: Record<string, string>;
  /** A login role in the given group roles (comma-separated), and a URL that connects as it. */
  createLoginRole(prefix: string, grants: string): Promise<string>;
  /** A pool that connects as a role made by `createLoginRole`; ended with the fixture. */
  poolFor(url: string): Promise<DatabasePool>;
}

export async function createVaultFixture(): Promise<VaultFixture> {
  const f = await createFixture();
  const roles: string[] = [];
  const pools: DatabasePool[] = [];
  return {
    ...f,
    vaultEnv: {
      ...f.env,
      VAULT_TOKEN_KEY: TEST_TOKEN_KEY,
      VAULT_RECOVERY_PUBLIC_KEY: TEST_RECOVERY.VAULT_RECOVERY_PUBLIC_KEY,
    },
    recoveryEnv: { ...f.env, VAULT_RECOVERY_KEY: TEST_RECOVERY.VAULT_RECOVERY_KEY },
    async createLoginRole(prefix, grants) {
      const name = `${prefix}_${randomBytes(3).toString("hex")}`;
      const password = randomBytes(12).toString("hex");
      roles.push(name);
      await f.pool.query(
        sql.unsafe`CREATE ROLE ${sql.identifier([name])} LOGIN PASSWORD ${sql.literalValue(password)}`,
      );
      for (const group of grants.split(",").map((g) => g.trim()).filter(Boolean)) {
        await f.pool.query(sql.unsafe`GRANT ${sql.identifier([group])} TO ${sql.identifier([name])}`);
      }
      const url = new URL(f.databaseUrl);
      url.username = name;
      url.password = password;
      return url.toString();
    },
    async poolFor(url) {
      const pool = await createDatabasePool(url, 2);
      pools.push(pool);
      return pool;
    },
    async close() {
      await Promise.all(pools.map((p) => p.end()));
      // The role that owns this database's vault is this database's alone: it goes with the
      // test, first, since its tables may sit in a schema a login role made.
      const owner = await vaultOwnerRole(f.pool);
      const dropped =
        owner && owner !== await f.pool.oneFirst(sql.unsafe`SELECT current_user::text`) && !roles.includes(owner)
          ? [owner, ...roles]
          : roles;
      for (const role of dropped) {
        await f.pool.query(sql.unsafe`DROP OWNED BY ${sql.identifier([role])}`);
        await f.pool.query(sql.unsafe`DROP ROLE ${sql.identifier([role])}`);
      }
      await f.close();
    },
  };
}

/** The role that owns `pii_vault.entries`, if the vault exists. */
export async function vaultOwnerRole(pool: DatabasePool): Promise<string | null> {
  return await pool.maybeOneFirst(sql.unsafe`
    SELECT r.rolname::text FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner
    WHERE c.oid = to_regclass('pii_vault.entries')`) as string | null;
}

export const login = (user_id: string, ip: string, device_id: string) =>
  JSON.stringify({ user_id, app_version: "1.2.3", device_type: "ios", ip, locale: "US", device_id });

/** The vault strategy, set up on `pool` (the owner's, or a loading role's), its mask recorded or checked as a run would. */
export async function createVault(pool: DatabasePool, vaultEnv: Record<string, string>): Promise<MaskStrategy> {
  await ensureSchema(pool);
  const strategy = await loadStrategy("vault", { env: vaultEnv });
  await strategy.setup!(pool);
  await ensureMaskRecord(pool, strategy);
  return strategy;
}

/** Turn bodies into records as the consumer would; a given message id makes a redelivery. */
export function toRecords(bodies: readonly string[], messageIds?: readonly string[]): LoginRecord[] {
  return bodies.map((body, i) =>
    (decodeMessage({
      MessageId: messageIds?.[i] ?? `m-${randomBytes(4).toString("hex")}-${i}`,
      ReceiptHandle: "r",
      Body: body,
      Attributes: { SentTimestamp: String(Date.now()) },
    }) as { record: LoginRecord }).record
  );
}

/** Load bodies straight through the sink, as the consumer would. */
export async function load(
  pool: DatabasePool,
  strategy: MaskStrategy,
  bodies: readonly string[],
  messageIds?: readonly string[],
): Promise<WriteOutcome> {
  const records = toRecords(bodies, messageIds);
  return await writeBatch(pool, strategy, await Promise.all(records.map((r) => maskRecord(strategy, r))));
}

export async function tokensOf(pool: DatabasePool, userId: string): Promise<{ ip: string; device_id: string }> {
  const row = (await readRows(pool)).find((r) => r.user_id === userId)!;
  return { ip: row.masked_ip, device_id: row.masked_device_id };
}

/**
 * Run a file of SQL as `psql -f` would. Slonik takes one statement per query, so split at
 * semicolons that end a line outside `$$` bodies; BEGIN/COMMIT become one Slonik transaction.
 */
export async function runSqlFile(pool: DatabasePool, path: string): Promise<void> {
  const statements: string[] = [];
  let current = "";
  for (const line of (await readFile(join(ROOT, path), "utf8")).split("\n")) {
    if (/^\s*--/.test(line) || line.trim() === "") continue;
    current += line + "\n";
    if ((current.match(/\$\$/g) ?? []).length % 2 === 0 && /;\s*$/.test(line)) {
      statements.push(current.trim().replace(/;$/, ""));
      current = "";
    }
  }
  await pool.transaction(async (tx) => {
    for (const text of statements.filter((s) => !/^(BEGIN|COMMIT)$/i.test(s))) await tx.query(rawSql(text));
  });
}

/** A statement from text, for SQL read from a file (Slonik otherwise takes only templates). */
export function rawSql(text: string) {
  const parts = Object.freeze(Object.assign([text], { raw: Object.freeze([text]) }));
  return sql.unsafe(parts as unknown as TemplateStringsArray);
}

/** The SQLSTATE a statement fails with, or "ok". */
export async function sqlState(pool: DatabasePool, query: ReturnType<typeof sql.unsafe>): Promise<string> {
  return await sqlStateOf(pool.query(query));
}

/** The SQLSTATE a database call fails with, or "ok". */
export async function sqlStateOf(call: Promise<unknown>): Promise<string> {
  try {
    await call;
    return "ok";
  } catch (error) {
    for (let e: unknown = error; e instanceof Error; e = e.cause) {
      if ("code" in e && typeof e.code === "string") return e.code;
    }
    return (error as Error).message;
  }
}
