/**
 * Whether the runtime can run the tool, said in one line before anything else goes wrong:
 * a Node older than 24 (Slonik 49 needs it), and, under Deno, the permissions the tool
 * needs. mod.ts imports this module first, so that under Deno the check runs before the
 * dependencies load: without permissions they fail at import, with a stack trace. A leaf:
 * it imports no file of the project.
 *
 * @module
 */
import { realpathSync } from "node:fs";
import process from "node:process";
import { pathToFileURL } from "node:url";

/** The oldest Node major the tool runs on; package.json's `engines` says the same (a test holds them together). */
export const MIN_NODE_MAJOR = 24;

/**
 * What Deno must grant: the network (SQS, Postgres, the metrics port), the environment
 * (settings, keys; dependencies read it as they load), files (`--env-file`, a strategy
 * module, the AWS SDK's profile), and two facts of the system (pino's host name, the AWS
 * SDK's OS release for its user agent). deno.json's tasks grant exactly these.
 */
export const DENO_PERMISSIONS = ["--allow-net", "--allow-env", "--allow-read", "--allow-sys=hostname,osRelease"];

/** Each flag of `DENO_PERMISSIONS` as the descriptors Deno answers for. */
const DENO_DESCRIPTORS: Record<string, { name: string; kind?: string }[]> = {
  "--allow-net": [{ name: "net" }],
  "--allow-env": [{ name: "env" }],
  "--allow-read": [{ name: "read" }],
  "--allow-sys=hostname,osRelease": [{ name: "sys", kind: "hostname" }, { name: "sys", kind: "osRelease" }],
};

interface DenoNamespace {
  mainModule: string;
  permissions: { querySync(descriptor: { name: string; kind?: string }): { state: string } };
  exit(code: number): never;
}

const deno = (globalThis as { Deno?: DenoNamespace }).Deno;

/**
 * The line to print when this Node is too old for the tool, or undefined.
 *
 * @example
 * ```ts
 * const tooOld = unsupportedNode(); // "sqs-login-masker needs Node.js >=24; this is v20.20.2. …"
 * ```
 */
export function unsupportedNode(): string | undefined {
  if (deno) return undefined;
  const major = Number(process.versions.node?.split(".")[0]);
  if (!(major < MIN_NODE_MAJOR)) return undefined;
  return `sqs-login-masker needs Node.js >=${MIN_NODE_MAJOR}; this is ${process.version}. ` +
    `Install Node.js ${MIN_NODE_MAJOR} or newer (https://nodejs.org/en/download)`;
}

/**
 * Whether the module of `meta` is the program being run: `import.meta.main` where the
 * runtime has it (Deno, Node 24.2 and later), else whether it is the script Node was given.
 * Without this, a Node without `import.meta.main` runs nothing and exits 0.
 */
export function isMainModule(meta: ImportMeta): boolean {
  const main = (meta as { main?: boolean }).main;
  if (typeof main === "boolean") return main;
  const script = process.argv[1];
  if (!script) return false;
  try {
    return pathToFileURL(realpathSync(script)).href === meta.url;
  } catch {
    return false;
  }
}

/** The flags of `DENO_PERMISSIONS` Deno has not granted (empty outside Deno). */
export function missingDenoPermissions(): string[] {
  if (!deno) return [];
  return DENO_PERMISSIONS.filter((flag) =>
    DENO_DESCRIPTORS[flag]!.some((descriptor) => deno.permissions.querySync(descriptor).state !== "granted")
  );
}

/** The one line for missing permissions: what is missing, and the two ways to grant it. */
export function describeMissingPermissions(missing: readonly string[]): string {
  return `Deno has not granted ${missing.join(" ")}, which the tool needs: run a task of deno.json ` +
    `(deno task consume …), or deno run ${DENO_PERMISSIONS.join(" ")} mod.ts …`;
}

// Only when Deno runs a file of this project: a program that imports the tool as a
// library decides its own permissions, and its own way of failing.
if (deno && deno.mainModule.startsWith(new URL("../", import.meta.url).href)) {
  const missing = missingDenoPermissions();
  if (missing.length > 0) {
    process.stderr.write(`error: ${describeMissingPermissions(missing)}\n`);
    deno.exit(2);
  }
}
