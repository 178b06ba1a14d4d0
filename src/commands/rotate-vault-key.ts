/**
 * Move the vault to a new recovery key pair, keeping every token as it is (tokens come from
 * `VAULT_TOKEN_KEY`, which a rotation neither needs nor touches).
 *
 * ```sh
 * npx tsx mod.ts vault-keygen --recovery-only   # the new pair
 * VAULT_PREVIOUS_RECOVERY_KEY=$OLD_PRIVATE VAULT_RECOVERY_PUBLIC_KEY=$NEW_PUBLIC \
 *   sqs-login-masker rotate-vault-key --database-url URL --reason "yearly rotation"
 * ```
 *
 * 1. Adds the new public key to the keyring as the next version (`pii_vault.add_key_version`).
 *    With `--add-only` it stops here: loaders can move to the new key without a stop.
 * 2. Retires the previous version (`pii_vault.retire_key_version`, committed on its own):
 *    the database waits for the batches writing under it, and from then on refuses every
 *    write under it; a loader still on the old key stops with one line naming the fix.
 * 3. Opens every entry of the previous version and seals it to the new key, a batch per
 *    transaction, under that committed (audited) request only.
 * 4. Once no entry of the previous version is left, which nothing can change any more,
 *    marks it emptied: the old private key opens nothing in this database. Audited.
 *
 * @module
 */
import { Type } from "@sinclair/typebox";
import { type DatabasePool, sql } from "slonik";
import { ConfigError } from "../errors.ts";
import { toStandardSchema } from "../typed-sql.ts";
import {
  createEntrySealer,
  formatPublicKey,
  openEntry,
  parseRecoveryKeys,
  parseRecoveryPublicKey,
  type RecoveryKey,
  type RecoveryPublicKey,
  VaultDecryptError,
} from "../../strategies/_vault-crypto.ts";
import { byteaArray, SELECT_KEYRING } from "../../strategies/vault.ts";
import { parseVaultArgs, runVaultCommand, type VaultArgs, VaultError } from "./vault-command.ts";

export const HELP =
  `Usage: sqs-login-masker rotate-vault-key --database-url URL [--reason "TEXT"] [--ticket ID] [--add-only]
       (from a checkout: npx tsx mod.ts rotate-vault-key …, or npx tsx scripts/rotate-vault-key.ts …)

Re-seal the vault from the recovery key pair whose private half is VAULT_PREVIOUS_RECOVERY_KEY
to the one whose public half is VAULT_RECOVERY_PUBLIC_KEY (make it with vault-keygen
--recovery-only), and retire the previous version: from its start, nothing more is written
under it, so loaders still on the old public key stop. Tokens do not change, and
VAULT_TOKEN_KEY is not needed. Safe to run again; audited.

  --database-url URL   a role with pii_vault_admin (sqs-login-masker vault-roles)  [env DATABASE_URL]
  --reason TEXT        why (default "key rotation")
  --ticket ID          the change it belongs to, for the audit log
  --add-only           only add the new version; the previous one keeps working until a run without it
  --batch-size N       entries per transaction (default 1000)
  --env-file PATH      read variables (DATABASE_URL, VAULT_PREVIOUS_RECOVERY_KEY, ...) from a file
  -h, --help           show this help

Exit codes: 0 done, 1 runtime failure (an entry does not open), 2 usage or key error.
`;

/** What a rotation did. */
export interface RotationOutcome {
  from: number;
  to: number;
  reencrypted: number;
  /** The previous version holds no entry and no key any more, and takes no write. */
  retired: boolean;
}

const sqlSealedRow = sql.type(
  toStandardSchema(Type.Object({ token: Type.String(), field: Type.String(), sealed: Type.String() })),
);
const sqlFinishRow = sql.type(toStandardSchema(Type.Object({ reencrypted: Type.Integer(), retired: Type.Boolean() })));

/**
 * The keyring versions of both keys, adding the new public key if it is not there yet.
 *
 * @returns the versions, and whether the previous one still holds entries (false: emptied before)
 */
async function keyringVersions(
  pool: DatabasePool,
  previous: RecoveryKey,
  next: RecoveryPublicKey,
  reason: string,
): Promise<{ from: number; to: number; previousHasEntries: boolean }> {
  const rows = await pool.any(SELECT_KEYRING);
  const oldRow = rows.find((r) => r.public_key === formatPublicKey(previous.publicKey));
  if (!oldRow) {
    throw new ConfigError(
      "VAULT_PREVIOUS_RECOVERY_KEY is not the private key of any version of the vault keyring: check it",
    );
  }
  if (oldRow.public_key === formatPublicKey(next)) {
    throw new ConfigError(
      "VAULT_RECOVERY_PUBLIC_KEY is the previous key's own public half: make a new pair with vault-keygen --recovery-only",
    );
  }
  const newRow = rows.find((r) => r.public_key === formatPublicKey(next));
  if (newRow?.retired) {
    throw new ConfigError(
      `VAULT_RECOVERY_PUBLIC_KEY is keyring version ${newRow.key_version}, retired: rotate to a new key pair`,
    );
  }
  const to = newRow?.key_version ?? await pool.oneFirst(sql.unsafe`
    SELECT pii_vault.add_key_version(${sql.binary(next.raw)}, ${reason})`) as number;
  return { from: oldRow.key_version, to, previousHasEntries: !oldRow.emptied };
}

/**
 * Retire the previous key's version: refuse writes under it, re-seal its entries to the
 * new public key, then mark it emptied.
 *
 * @throws {ConfigError} when a key is not in the keyring
 * @throws {VaultError} when an entry does not open under the previous key (it is left as it is)
 */
export async function rotateVaultKey(
  pool: DatabasePool,
  keys: { previous: RecoveryKey; next: RecoveryPublicKey },
  options: { reason: string; ticket?: string; batchSize?: number; addOnly?: boolean },
): Promise<RotationOutcome> {
  const { from, to, previousHasEntries } = await keyringVersions(pool, keys.previous, keys.next, options.reason);
  if (!previousHasEntries) return { from, to, reencrypted: 0, retired: true };
  if (options.addOnly) return { from, to, reencrypted: 0, retired: false };
  // Its own transaction, committed before any entry is handed out for re-sealing.
  const requestId = await pool.oneFirst(sql.unsafe`
    SELECT pii_vault.retire_key_version(${from}, ${to}, ${options.reason}, ${options.ticket ?? null})`) as number;
  for (;;) {
    const count = await pool.transaction(async (tx) => {
      const rows = await tx.any(sqlSealedRow`
        SELECT token, field, encode(sealed, 'base64') AS sealed FROM pii_vault.rotation_entries(${requestId}, ${
        options.batchSize ?? 1000
      })`);
      if (rows.length === 0) return 0;
      const seal = createEntrySealer(keys.next);
      const sealed = rows.map(({ token, field, sealed }) => {
        let value: string;
        try {
          value = openEntry(keys.previous, field, token, Buffer.from(sealed, "base64"));
        } catch (error) {
          if (!(error instanceof VaultDecryptError)) throw error;
          throw new VaultError(
            `The vault entry for ${token} does not open under key version ${from} (changed after it was written?): rotation stopped, nothing of this batch changed`,
          );
        }
        return seal(field, token, value);
      });
      await tx.query(sql.unsafe`
        SELECT pii_vault.rotation_store(${requestId}, ${sql.array(rows.map((r) => r.token), "text")}, ${
        byteaArray(sealed)
      })`);
      return rows.length;
    });
    if (count === 0) break;
  }
  const finished = await pool.one(
    sqlFinishRow`SELECT reencrypted, retired FROM pii_vault.finish_rotation(${requestId})`,
  );
  return { from, to, ...finished };
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
  parseRecoveryKeys(env, ["VAULT_PREVIOUS_RECOVERY_KEY"]);
  parseRecoveryPublicKey(env);
  return args;
}

export async function main(argv: readonly string[], env: Record<string, string | undefined>): Promise<number> {
  return await runVaultCommand(argv, env, HELP, parseRotateArgs, async (pool, args) => {
    const previous = parseRecoveryKeys(env, ["VAULT_PREVIOUS_RECOVERY_KEY"]).at(-1)!;
    const next = parseRecoveryPublicKey(env);
    const size = args.values["batch-size"] as string | undefined;
    const addOnly = args.values["add-only"] === true;
    const outcome = await rotateVaultKey(pool, { previous, next }, {
      reason: args.reason || "key rotation",
      ticket: args.ticket || undefined,
      batchSize: size ? Number(size) : undefined,
      addOnly,
    });
    const versions = `from_version=${outcome.from} to_version=${outcome.to}`;
    process.stdout.write(
      addOnly && !outcome.retired
        ? `added: ${versions} previous_version_still_accepted (move the loaders to version ${outcome.to}, then run again without --add-only)\n`
        : `rotated: reencrypted=${outcome.reencrypted} ${versions} ` +
          `${
            outcome.retired ? "previous_version_retired" : "previous_version_kept (entries of it remain: run again)"
          }\n`,
    );
  });
}
