/**
 * Move the vault to a new `VAULT_KEY`, keeping every token as it is.
 *
 * ```sh
 * VAULT_PREVIOUS_KEY=$OLD VAULT_PREVIOUS_KEY_VERSION=1 VAULT_KEY=$NEW VAULT_KEY_VERSION=2 \
 *   sqs-login-masker rotate-vault-key --database-url URL --reason "yearly rotation"
 * ```
 *
 * 1. Adds the new version to the keyring (`pii_vault.add_key_version`): the same token key,
 *    wrapped under the new key (tokens depend on the token key only, so they do not change).
 *    With `--add-only` it stops here: loaders can move to the new version without a stop.
 * 2. Retires the previous version (`pii_vault.retire_key_version`, committed on its own):
 *    the database waits for the batches writing under it, and from then on refuses every
 *    write under it; a loader still on the old key stops with one line naming the fix.
 * 3. Re-encrypts every entry of the previous version under the new one, a batch per
 *    transaction, under that committed (audited) request only.
 * 4. Once no entry of the previous version is left, which nothing can change any more,
 *    deletes its wrapped key: the old key opens nothing in this database. Audited.
 *
 * @module
 */
import { Type } from "@sinclair/typebox";
import { type DatabasePool, sql } from "slonik";
import { ConfigError } from "../errors.ts";
import { toStandardSchema } from "../typed-sql.ts";
import {
  decryptEntry,
  encryptEntry,
  parseVaultKeys,
  VaultDecryptError,
  type VaultKey,
  wrapTokenKey,
} from "../../strategies/_vault-crypto.ts";
import { byteaArray, openKeyringRow, SELECT_KEYRING } from "../../strategies/vault.ts";
import { parseVaultArgs, runVaultCommand, type VaultArgs, VaultError } from "./vault-command.ts";

export const HELP =
  `Usage: sqs-login-masker rotate-vault-key --database-url URL [--reason "TEXT"] [--ticket ID] [--add-only]
       (from a checkout: npx tsx mod.ts rotate-vault-key …, or npx tsx scripts/rotate-vault-key.ts …)

Re-encrypt the vault from VAULT_PREVIOUS_KEY (version VAULT_PREVIOUS_KEY_VERSION) to VAULT_KEY
(version VAULT_KEY_VERSION), and retire the previous version: from its start, nothing more
is written under it, so loaders still on the old key stop. Tokens do not change. Safe to
run again; audited.

  --database-url URL   a role with pii_vault_admin (sqs-login-masker vault-roles)  [env DATABASE_URL]
  --reason TEXT        why (default "key rotation")
  --ticket ID          the change it belongs to, for the audit log
  --add-only           only add the new version; the previous one keeps working until a run without it
  --batch-size N       entries per transaction (default 1000)
  --env-file PATH      read variables (DATABASE_URL, VAULT_KEY, ...) from a file
  -h, --help           show this help

Exit codes: 0 done, 1 runtime failure (an entry does not open), 2 usage or key error.
`;

/** What a rotation did. */
export interface RotationOutcome {
  reencrypted: number;
  /** The previous version holds no entry and no key any more, and takes no write. */
  retired: boolean;
}

const sqlSealedRow = sql.type(
  toStandardSchema(Type.Object({ token: Type.String(), field: Type.String(), sealed: Type.String() })),
);
const sqlFinishRow = sql.type(toStandardSchema(Type.Object({ reencrypted: Type.Integer(), retired: Type.Boolean() })));

/**
 * Make sure the keyring holds the current version, wrapping the token key the previous one opens.
 *
 * @returns whether the previous version still has its key (false: retired before)
 */
async function addKeyringVersion(
  pool: DatabasePool,
  current: VaultKey,
  previous: VaultKey,
  reason: string,
): Promise<boolean> {
  const rows = await pool.any(SELECT_KEYRING);
  const newRow = rows.find((r) => r.key_version === current.version);
  const oldRow = rows.find((r) => r.key_version === previous.version);
  if (newRow?.retired) {
    throw new ConfigError(`VAULT_KEY_VERSION=${current.version} is retired: rotate to a new version number`);
  }
  if (newRow?.wrapped_token_key) {
    const tokenKey = openKeyringRow(current, newRow.wrapped_token_key);
    if (oldRow?.wrapped_token_key && !openKeyringRow(previous, oldRow.wrapped_token_key).equals(tokenKey)) {
      throw new VaultError(
        `Keyring versions ${previous.version} and ${current.version} hold different token keys: refusing to mix them`,
      );
    }
    return oldRow?.wrapped_token_key != null;
  }
  if (!oldRow?.wrapped_token_key) {
    throw new ConfigError(
      `The vault keyring holds neither version ${previous.version} nor ${current.version}: check VAULT_PREVIOUS_KEY_VERSION and VAULT_KEY_VERSION`,
    );
  }
  const wrapped = wrapTokenKey(current, openKeyringRow(previous, oldRow.wrapped_token_key)).toString("base64");
  await pool.query(
    sql.unsafe`SELECT pii_vault.add_key_version(${current.version}, decode(${wrapped}, 'base64'), ${reason})`,
  );
  return true;
}

/**
 * Retire `keys.previous`: refuse writes under it, re-encrypt its entries under `keys.current`,
 * then drop its wrapped key.
 *
 * @throws {ConfigError} when a key does not open its keyring version
 * @throws {VaultError} when an entry does not open under the previous key (it is left as it is)
 */
export async function rotateVaultKey(
  pool: DatabasePool,
  keys: { current: VaultKey; previous: VaultKey },
  options: { reason: string; ticket?: string; batchSize?: number; addOnly?: boolean },
): Promise<RotationOutcome> {
  const { current, previous } = keys;
  const previousHasKey = await addKeyringVersion(pool, current, previous, options.reason);
  if (!previousHasKey) return { reencrypted: 0, retired: true };
  if (options.addOnly) return { reencrypted: 0, retired: false };
  // Its own transaction, committed before any entry is handed out for re-encryption.
  const requestId = await pool.oneFirst(sql.unsafe`
    SELECT pii_vault.retire_key_version(${previous.version}, ${current.version}, ${options.reason}, ${
    options.ticket ?? null
  })`) as number;
  for (;;) {
    const count = await pool.transaction(async (tx) => {
      const rows = await tx.any(sqlSealedRow`
        SELECT token, field, encode(sealed, 'base64') AS sealed FROM pii_vault.rotation_entries(${requestId}, ${
        options.batchSize ?? 1000
      })`);
      if (rows.length === 0) return 0;
      const sealed = rows.map(({ token, field, sealed }) => {
        let value: string;
        try {
          value = decryptEntry(previous, field, token, Buffer.from(sealed, "base64"));
        } catch (error) {
          if (!(error instanceof VaultDecryptError)) throw error;
          throw new VaultError(
            `The vault entry for ${token} does not open under key version ${previous.version} (changed after it was written?): rotation stopped, nothing of this batch changed`,
          );
        }
        return encryptEntry(current, field, token, value);
      });
      await tx.query(sql.unsafe`
        SELECT pii_vault.rotation_store(${requestId}, ${sql.array(rows.map((r) => r.token), "text")}, ${
        byteaArray(sealed)
      })`);
      return rows.length;
    });
    if (count === 0) break;
  }
  return await pool.one(sqlFinishRow`SELECT reencrypted, retired FROM pii_vault.finish_rotation(${requestId})`);
}

function parseRotateArgs(argv: readonly string[], env: Record<string, string | undefined>): VaultArgs {
  const args = parseVaultArgs(argv, env, {
    flags: { "batch-size": { type: "string" }, "add-only": { type: "boolean" } },
    reasonOptional: true,
  });
  if (args.help) return args;
  const size = args.values["batch-size"] as string | undefined;
  if (size !== undefined && (!/^\d+$/.test(size) || Number(size) < 1 || Number(size) > 100_000)) {
    throw new ConfigError(`--batch-size must be a whole number from 1 to 100000, got "${size}"`);
  }
  if (!parseVaultKeys(env).previous) {
    throw new ConfigError(
      "VAULT_PREVIOUS_KEY is not set: rotation needs the old key there and the new one in VAULT_KEY",
    );
  }
  return args;
}

export async function main(argv: readonly string[], env: Record<string, string | undefined>): Promise<number> {
  return await runVaultCommand(argv, env, HELP, parseRotateArgs, async (pool, args) => {
    const { current, previous } = parseVaultKeys(env);
    const size = args.values["batch-size"] as string | undefined;
    const addOnly = args.values["add-only"] === true;
    const outcome = await rotateVaultKey(pool, { current, previous: previous! }, {
      reason: args.reason || "key rotation",
      ticket: args.ticket || undefined,
      batchSize: size ? Number(size) : undefined,
      addOnly,
    });
    const versions = `from_version=${previous!.version} to_version=${current.version}`;
    process.stdout.write(
      addOnly && !outcome.retired
        ? `added: ${versions} previous_version_still_accepted (move the loaders to version ${current.version}, then run again without --add-only)\n`
        : `rotated: reencrypted=${outcome.reencrypted} ${versions} ` +
          `${
            outcome.retired ? "previous_version_retired" : "previous_version_kept (entries of it remain: run again)"
          }\n`,
    );
  });
}
