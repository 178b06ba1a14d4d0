/**
 * Recover originals from the vault, for those allowed to: it needs `VAULT_RECOVERY_KEY` and
 * a role in pii_recovery, and every recovery leaves an audit row that is committed before
 * any ciphertext is handed out. It does not need, and must not have, `VAULT_TOKEN_KEY`.
 *
 * ```sh
 * VAULT_RECOVERY_KEY=... sqs-login-masker recover --database-url URL --reason "TEXT" --ticket ID TOKEN [TOKEN...]
 * VAULT_RECOVERY_KEY=... sqs-login-masker recover --database-url URL --reason "TEXT" --ticket ID --user-id ID
 * ```
 *
 * Two transactions: `pii_vault.request_recovery` commits the request (reason, ticket; the
 * database adds who and when), then `pii_vault.serve_recovery` hands out the ciphertexts of
 * that request only, and records that it did, or why it would not. Each value is printed as
 * `field<TAB>token<TAB>original`, one line each, and nothing at all when any entry fails to
 * open. Whether a value is the one its token stands for only a holder of the token key can
 * tell: the recovery role cannot, by design (docs/vault.md).
 *
 * @module
 */
import { Type } from "@sinclair/typebox";
import { type DatabasePool, sql } from "slonik";
import type { PiiField } from "../contract.ts";
import { ConfigError, errorCode } from "../errors.ts";
import { toStandardSchema } from "../typed-sql.ts";
import {
  formatPublicKey,
  isToken,
  openEntry,
  parseRecoveryKeys,
  type RecoveryKey,
  VaultDecryptError,
} from "../../strategies/_vault-crypto.ts";
import type { RecoveryFailure } from "../../strategies/_vault-schema.ts";
import { liveVersions, SELECT_KEYRING } from "../../strategies/vault.ts";
import { parseVaultArgs, runVaultCommand, type VaultArgs, VaultError } from "./vault-command.ts";

export const HELP = `Usage: sqs-login-masker recover --database-url URL --reason "TEXT" --ticket ID TOKEN [TOKEN...]
       sqs-login-masker recover --database-url URL --reason "TEXT" --ticket ID --user-id ID
       (from a checkout: npx tsx mod.ts recover …, or npx tsx scripts/recover.ts …)

Print the originals behind vault tokens (or behind a user's ip and device_id in user_logins),
one line each: field, token, original, separated by tabs. Every recovery is audited in
pii_vault.audit, committed before anything is handed out: the reason and ticket, and (set by
the database) who and when. The audit does not keep which tokens.

  --database-url URL   a role with pii_recovery (sqs-login-masker vault-roles)  [env DATABASE_URL]
  --reason TEXT        why; required
  --ticket ID          the request or incident it answers; required
  --user-id ID         recover that user's values instead of listed tokens
  --env-file PATH      read variables (DATABASE_URL, VAULT_RECOVERY_KEY, ...) from a file
  -h, --help           show this help

Needs VAULT_RECOVERY_KEY, the private half of the vault's recovery key pair (during a key
rotation also VAULT_PREVIOUS_RECOVERY_KEY). It cannot make tokens. See docs/vault.md.
Exit codes: 0 printed, 1 runtime failure (tampered entry, unknown token), 2 usage or key error.
`;

/** What to recover, and why. */
export interface RecoveryRequest {
  reason: string;
  ticket: string;
  tokens?: readonly string[];
  userId?: string;
}

/** One recovered value. Holds raw PII: print it only where the caller asked for it. */
export interface RecoveredValue {
  field: PiiField;
  token: string;
  value: string;
}

const NullableText = Type.Union([Type.String(), Type.Null()]);
/** What `serve_recovery` answers: a denial, the tokens it lacks, or every ciphertext asked for. */
const ServedRow = Type.Object({
  outcome: Type.Union([Type.Literal("served"), Type.Literal("missing"), Type.Literal("denied")]),
  detail: NullableText,
  token: NullableText,
  field: Type.Union([Type.Literal("ip"), Type.Literal("device_id"), Type.Null()]),
  key_version: Type.Union([Type.Integer(), Type.Null()]),
  sealed: NullableText,
});
const sqlServedRow = sql.type(toStandardSchema(ServedRow));
const sqlMaskedRow = sql.type(toStandardSchema(Type.Object({ masked: Type.String() })));

/**
 * Fail early and precisely on a wrong key: each configured key must be a keyring version.
 *
 * @returns the private key of each keyring version configured
 */
async function keysByVersion(pool: DatabasePool, keys: readonly RecoveryKey[]): Promise<Map<number, RecoveryKey>> {
  const rows = await pool.any(SELECT_KEYRING);
  const byVersion = new Map<number, RecoveryKey>();
  for (const key of keys) {
    const row = rows.find((r) => r.public_key === formatPublicKey(key.publicKey));
    if (row && !row.emptied) byVersion.set(row.key_version, key);
  }
  if (byVersion.size > 0) return byVersion;
  throw new ConfigError(
    `VAULT_RECOVERY_KEY is not the private key of any version of the vault keyring (current version ${
      liveVersions(rows)
    }): set it to the recovery key pair's private half`,
  );
}

/**
 * Serve a committed request. A serving that meets an erasure committed after its snapshot
 * fails with 40001 (a REPEATABLE READ default, say): the values are gone, say so.
 */
async function serve(pool: DatabasePool, requestId: number) {
  try {
    return await pool.any(sqlServedRow`
      SELECT outcome, detail, token, field, key_version, encode(sealed, 'base64') AS sealed
      FROM pii_vault.serve_recovery(${requestId})`);
  } catch (error) {
    if (errorCode(error) !== "40001") throw error;
    throw new VaultError(
      "The vault's entries changed while they were served (an erasure, most likely): nothing recovered; ask again",
    );
  }
}

/**
 * The tokens in a user's rows of `user_logins`.
 *
 * @throws {VaultError} when the user has no rows, or none with a token left
 */
async function userTokens(pool: DatabasePool, userId: string): Promise<string[]> {
  const masked = await pool.anyFirst(sqlMaskedRow`
    SELECT DISTINCT masked FROM user_logins, LATERAL (VALUES (masked_ip), (masked_device_id)) AS v(masked)
    WHERE user_id = ${userId} AND masked IS NOT NULL`);
  if (masked.length === 0) throw new VaultError(`No rows for user_id ${JSON.stringify(userId)} in user_logins`);
  const tokens = masked.filter(isToken).sort();
  if (tokens.length === 0) {
    throw new VaultError(
      `User ${
        JSON.stringify(userId)
      } has no vault tokens in user_logins: erased by sqs-login-masker forget, or loaded with another strategy`,
    );
  }
  return tokens;
}

/**
 * Recover the originals of the given tokens, or of a user's tokens: the request commits
 * first, in a transaction of its own, and only then are its ciphertexts served.
 *
 * @returns the values in token order (for a user: ip first, then device_id)
 * @throws {VaultError} when the vault refuses, for unknown or erased tokens, and for entries
 *   that fail to open (reported, and set aside: see `pii_vault.report_recovery_failure`)
 * @throws {ConfigError} when a key is wrong or the entry's key version is not configured
 */
export async function recoverValues(
  pool: DatabasePool,
  keys: readonly RecoveryKey[],
  request: RecoveryRequest,
): Promise<RecoveredValue[]> {
  const byVersion = await keysByVersion(pool, keys);
  const tokens = request.userId !== undefined
    ? await userTokens(pool, request.userId)
    : [...new Set(request.tokens ?? [])];
  // Each call runs in a transaction of its own: the request is committed before anything is
  // served, and the answer (served, denied, failed) is committed with its audit row.
  const requestId = await pool.oneFirst(sql.unsafe`
    SELECT pii_vault.request_recovery(${request.reason}, ${request.ticket}, ${sql.array(tokens, "text")})`) as number;
  const rows = await serve(pool, requestId);
  const denied = rows.find((r) => r.outcome === "denied");
  if (denied) throw new VaultError(`The vault refused the recovery: ${denied.detail}`);
  const missing = new Set(rows.filter((r) => r.outcome === "missing").map((r) => r.token));
  if (missing.size > 0) {
    throw new VaultError(
      `${missing.size} token(s) not in the vault (erased by sqs-login-masker forget, or never stored): ${
        tokens.filter((t) => missing.has(t)).join(" ")
      }`,
    );
  }
  const failed = async (failure: RecoveryFailure, token: string, error: Error): Promise<never> => {
    await pool.query(sql.unsafe`SELECT pii_vault.report_recovery_failure(${requestId}, ${failure}, ${token})`);
    throw error;
  };
  const byToken = new Map(rows.map((row) => [row.token!, row]));
  const recovered: RecoveredValue[] = [];
  for (const token of tokens) {
    const row = byToken.get(token)!;
    const field = row.field!;
    const key = byVersion.get(row.key_version!);
    if (!key) {
      await failed(
        "key_version_not_configured",
        token,
        new ConfigError(
          `Token ${token} was sealed to key version ${row.key_version}, whose private key is not configured: set VAULT_PREVIOUS_RECOVERY_KEY to it, or finish the rotation`,
        ),
      );
    }
    let value: string;
    try {
      value = openEntry(key!, field, token, Buffer.from(row.sealed!, "base64"));
    } catch (error) {
      if (!(error instanceof VaultDecryptError)) throw error;
      return await failed(
        "does_not_authenticate",
        token,
        new VaultError(
          `The vault entry for ${token} does not open under key version ${row.key_version}: it was changed or moved after it was written; nothing recovered. The entry is set aside, so the value's next load writes it afresh`,
        ),
      );
    }
    recovered.push({ field, token, value });
  }
  return request.userId !== undefined ? recovered.sort((a, b) => b.field.localeCompare(a.field)) : recovered;
}

/** One output line; values with control characters are quoted so each stays on its line. */
export function formatRecovered({ field, token, value }: RecoveredValue): string {
  // deno-lint-ignore no-control-regex -- control characters are what it finds
  return `${field}\t${token}\t${/[\x00-\x1f\x7f]/.test(value) ? JSON.stringify(value) : value}`;
}

function parseRecoverArgs(argv: readonly string[], env: Record<string, string | undefined>): VaultArgs {
  const args = parseVaultArgs(argv, env, { flags: { "user-id": { type: "string" } }, positionals: true });
  if (args.help) return args;
  const userId = args.values["user-id"] as string | undefined;
  if (userId === undefined && args.positionals.length === 0) {
    throw new ConfigError("Nothing to recover: give tokens, or --user-id ID");
  }
  if (userId !== undefined && args.positionals.length > 0) throw new ConfigError("Give tokens or --user-id, not both");
  const bad = args.positionals.findIndex((t) => !isToken(t));
  // The argument is not echoed: a mistaken paste may be a raw value.
  if (bad >= 0) throw new ConfigError(`Argument ${bad + 1} is not a vault token (expected vlt1: and 43 characters)`);
  parseRecoveryKeys(env, ["VAULT_RECOVERY_KEY"]);
  return args;
}

export async function main(argv: readonly string[], env: Record<string, string | undefined>): Promise<number> {
  return await runVaultCommand(argv, env, HELP, parseRecoverArgs, async (pool, args) => {
    const recovered = await recoverValues(pool, parseRecoveryKeys(env, ["VAULT_RECOVERY_KEY"]), {
      reason: args.reason,
      ticket: args.ticket,
      tokens: args.positionals,
      userId: args.values["user-id"] as string | undefined,
    });
    process.stdout.write(recovered.map(formatRecovered).join("\n") + "\n");
  });
}
