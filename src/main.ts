/**
 * The one command: `sqs-login-masker [options]` consumes (src/cli.ts); `sqs-login-masker
 * NAME …` runs the subcommand NAME (src/commands/registry.ts) with the arguments after it.
 *
 * @module
 */
import process from "node:process";
import { consumeCommand } from "./cli.ts";
import { SUBCOMMANDS } from "./commands/registry.ts";
import { EXIT_USAGE } from "./errors.ts";

/**
 * The command line: the installed `sqs-login-masker` command is this. Writes to stdout and
 * stderr; consuming handles SIGINT and SIGTERM.
 *
 * @param argv the arguments after the program name
 * @param env the environment
 * @returns the exit code: 0 done, 1 runtime failure, 2 usage or configuration error
 */
export async function main(argv: readonly string[], env: Record<string, string | undefined>): Promise<number> {
  const [first, ...rest] = argv;
  // The bare command takes no positional argument: a first word that is no flag names a subcommand.
  if (first === undefined || first.startsWith("-")) return await consumeCommand(argv, env);
  const subcommand = Object.hasOwn(SUBCOMMANDS, first) ? SUBCOMMANDS[first] : undefined;
  if (!subcommand) {
    process.stderr.write(
      `error: Unknown command "${first}": use one of ${
        Object.keys(SUBCOMMANDS).join(", ")
      }, or no command to consume; run with --help\n`,
    );
    return EXIT_USAGE;
  }
  return await (await subcommand.load()).main(rest, env);
}
