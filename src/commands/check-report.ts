/**
 * What `check` found, and how it is told: what holds on stdout (`ok: …`), each problem and
 * each warning on stderr, one line apiece with its fix, and the exit code they call for.
 *
 * @module
 */
import process from "node:process";
import { EXIT_FAILURE, EXIT_USAGE } from "../errors.ts";

/** One thing `check` found: what holds, what to improve, or what stops the tool. */
export interface Finding {
  level: "ok" | "warning" | "error";
  /** One line: what is so, and for a problem how to fix it. */
  text: string;
  /** An error in how the tool is configured (exit 2) rather than in a service (exit 1). */
  usage?: boolean;
}

/** An error finding from anything thrown, keeping whether it is a configuration error. */
export function errorFinding(text: string, usage = false): Finding {
  return { level: "error", text, usage };
}

/**
 * Print the findings, in order: `ok:` lines on stdout, `warning:` and `error:` lines on stderr.
 *
 * @returns 0 when nothing is an error (warnings included), 2 when a configuration error is
 *   among the errors, else 1
 */
export function reportFindings(findings: readonly Finding[]): number {
  for (const { level, text } of findings) {
    (level === "ok" ? process.stdout : process.stderr).write(`${level}: ${text}\n`);
  }
  const errors = findings.filter((f) => f.level === "error");
  if (errors.length === 0) return 0;
  return errors.some((f) => f.usage) ? EXIT_USAGE : EXIT_FAILURE;
}
