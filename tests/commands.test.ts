/**
 * The one command and its subcommands, from a checkout: each answers --help with its own
 * usage (through tsx, and through Node's own type stripping as the image runs it), a wrong
 * flag or an unknown command is one line, and `vault-roles` prints the roles SQL that
 * scripts/vault-roles.sql holds.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { HELP } from "../src/cli.ts";
import { SUBCOMMANDS } from "../src/commands/registry.ts";
import { MIN_NODE_MAJOR } from "../src/runtime.ts";
import { VAULT_ROLES_SQL } from "../strategies/_vault-roles.ts";
import { olderNode, ROOT, runCommand, runTool } from "./helpers.ts";

const NAMES = ["check", "recover", "forget", "rotate-vault-key", "ipcrypt", "vault-keygen", "vault-roles"];

describe("the subcommands", () => {
  it("are these, each listed in the tool's --help", () => {
    expect(Object.keys(SUBCOMMANDS)).toEqual(NAMES);
    for (const name of NAMES) expect(HELP).toMatch(new RegExp(`^  ${name} +\\S`, "m"));
  });

  describe.each(NAMES)("%s", (name) => {
    it("--help prints its usage and exits 0", async () => {
      const run = await runTool([name, "--help"], {});
      expect(run.stderr).toBe("");
      expect(run.code).toBe(0);
      expect(run.stdout).toMatch(new RegExp(`^Usage: sqs-login-masker ${name}[ \\n]`));
    });

    it("an unknown flag: exit 2, one line pointing to --help", async () => {
      const run = await runTool([name, "--no-such-flag"], {});
      expect(run.stderr).toMatch(/^error: Unknown option '--no-such-flag'.*run with --help.*\n$/);
      expect(run.code).toBe(2);
      expect(run.stdout).toBe("");
    });
  });

  it("an unknown command: one line naming the commands, exit 2", async () => {
    const run = await runTool(["recovr", "--help"], {});
    expect(run.stderr).toBe(
      `error: Unknown command "recovr": use one of ${NAMES.join(", ")}, or no command to consume; run with --help\n`,
    );
    expect(run.code).toBe(2);
    // Something that is no command name is not echoed: it may be a pasted value.
    const pasted = await runTool(["203.0.113.7"], {});
    expect(pasted.stderr).toMatch(/^error: The first argument is no command: use one of /);
    expect(pasted.stderr).not.toContain("203.0.113.7");
  });

  it("run by Node itself (node mod.ts, as the image does): every --help", { timeout: 180_000 }, async () => {
    for (const name of NAMES) {
      const run = await runCommand(process.execPath, ["mod.ts", name, "--help"], {});
      expect(run.stderr, name).toBe("");
      expect(run.code, name).toBe(0);
      expect(run.stdout).toMatch(new RegExp(`^Usage: sqs-login-masker ${name}[ \\n]`));
    }
  });
});

describe("vault-roles", () => {
  it("prints scripts/vault-roles.sql, byte for byte", async () => {
    const file = await readFile(join(ROOT, "scripts", "vault-roles.sql"), "utf8");
    // One text, two places: after editing strategies/_vault-roles.ts,
    // npx tsx mod.ts vault-roles > scripts/vault-roles.sql
    expect(file, "scripts/vault-roles.sql differs from strategies/_vault-roles.ts").toBe(VAULT_ROLES_SQL);
    const run = await runTool(["vault-roles"], {});
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    expect(run.stdout).toBe(file);
  });
});

describe("on a Node older than the tool needs", () => {
  it("package.json's engines and the tool's own check agree", async () => {
    const { engines } = JSON.parse(await readFile(join(ROOT, "package.json"), "utf8"));
    expect(engines.node).toBe(`>=${MIN_NODE_MAJOR}`);
  });

  const oldNode = olderNode();
  it.skipIf(oldNode === undefined)(
    `tsx mod.ts under ${oldNode}: one line naming the Node it needs, exit 1, not silence`,
    { timeout: 180_000 },
    async () => {
      // As a global tsx, or node_modules/.bin/tsx, runs with the system's Node.
      const tsx = join(ROOT, "node_modules", "tsx", "dist", "cli.mjs");
      for (const args of [["mod.ts", "--help"], ["mod.ts", "check"], ["scripts/recover.ts", "--help"]]) {
        const run = await runCommand(oldNode!, [tsx, ...args], {});
        expect(run.stderr, args.join(" ")).toMatch(
          new RegExp(
            `^error: sqs-login-masker needs Node\\.js >=${MIN_NODE_MAJOR}; this is v\\d+\\.\\d+\\.\\d+\\. .*\\n$`,
          ),
        );
        expect(run.stdout).toBe("");
        expect(run.code).toBe(1);
      }
    },
  );
});
