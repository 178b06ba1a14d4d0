/**
 * `sqs-login-masker check`: what the consumer needs, checked without consuming. The same
 * flags and environment as the bare command; first the flags and the strategy's keys, then
 * the queues and Postgres side by side. It receives no message (only GetQueueAttributes)
 * and changes nothing (a read-only transaction).
 *
 * @module
 */
import process from "node:process";
import { type Config, parseConfig } from "../config.ts";
import type { MaskStrategy } from "../contract.ts";
import { failed } from "../errors.ts";
import { loadStrategy } from "../masking.ts";
import { createSqsClient } from "../sqs.ts";
import { checkDatabase } from "./check-database.ts";
import { checkQueues } from "./check-queues.ts";
import { type Finding, reportFindings } from "./check-report.ts";

export const HELP = `Usage: sqs-login-masker check [options]
       (from a checkout: npx tsx mod.ts check …, or deno task check …)

Check what the consumer needs, with the same options and environment (sqs-login-masker
--help lists them; --env-file PATH too), and exit. Nothing is received and nothing is changed:

  flags and keys   every option, and the strategy's keys (MASK_HMAC_KEY, VAULT_TOKEN_KEY, ...)
  the queue        reachable; its VisibilityTimeout; a RedrivePolicy, and that it points
                   at the DLQ given
  the DLQ          reachable; FIFO when the queue is, standard when it is not; its
                   MaximumMessageSize not below the queue's
  Postgres         the login; a server that takes writes; user_logins as the contract has
                   it (or the right to create it); INSERT on it and on its ledger

What holds is printed on stdout (ok: …); each problem and each warning is one line on
stderr with its fix (error: …, warning: …).

Exit codes: 0 ready (warnings allowed), 1 a problem with a queue or Postgres,
2 a usage or configuration error (a flag, a key, the AWS region).
`;

/** Check everything, and say what was found. */
export async function main(argv: readonly string[], env: Record<string, string | undefined>): Promise<number> {
  let config: Config;
  let strategy: MaskStrategy;
  try {
    config = parseConfig(argv, env);
    if (config.help) {
      process.stdout.write(HELP);
      return 0;
    }
    strategy = await loadStrategy(config.strategy, { env });
  } catch (error) {
    return failed(error, { usage: true });
  }
  const sqs = createSqsClient();
  try {
    const [queues, database] = await Promise.all([
      checkQueues(sqs, config),
      checkDatabase(config.databaseUrl, strategy),
    ]);
    return reportFindings([...strategyFindings(config, strategy), ...queues, ...database]);
  } finally {
    sqs.destroy();
  }
}

function strategyFindings(config: Config, strategy: MaskStrategy): Finding[] {
  const findings: Finding[] = [{ level: "ok", text: `--strategy ${config.strategy}: created, its keys accepted` }];
  if (strategy.caution) findings.push({ level: "warning", text: `--strategy ${strategy.name}: ${strategy.caution}` });
  return findings;
}
