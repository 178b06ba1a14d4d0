/**
 * The subcommands of the one command (`sqs-login-masker recover …`), each loaded only when
 * it is asked for: consuming, the bare command, never loads an operator's command.
 *
 * @module
 */

/** What a subcommand module exports. */
export interface SubcommandModule {
  /** Run it (`--help` included): the arguments after its name; the exit code. */
  main(argv: readonly string[], env: Record<string, string | undefined>): number | Promise<number>;
}

/** A subcommand: its one-line summary for the tool's help, and its module. */
export interface Subcommand {
  summary: string;
  load(): Promise<SubcommandModule>;
}

/** Every subcommand, in the order the help lists them. */
export const SUBCOMMANDS: Readonly<Record<string, Subcommand>> = {
  check: {
    summary: "check flags, keys, the queues and Postgres, and exit; receives nothing",
    load: () => import("./check.ts"),
  },
  recover: {
    summary: "print the originals behind vault tokens, audited (needs VAULT_RECOVERY_KEY)",
    load: () => import("./recover.ts"),
  },
  forget: {
    summary: "erase a user's ip and device_id for good, audited",
    load: () => import("./forget.ts"),
  },
  "rotate-vault-key": {
    summary: "move the vault to a new recovery key pair; tokens stay as they are",
    load: () => import("./rotate-vault-key.ts"),
  },
  ipcrypt: {
    summary: "decrypt: the addresses behind ipcrypt and ipcrypt-pfx masks (needs MASK_IPCRYPT_KEY)",
    load: () => import("./ipcrypt.ts"),
  },
  "vault-keygen": {
    summary: "print new vault keys, one secret per role, as environment lines",
    load: () => import("./vault-keygen.ts"),
  },
  "vault-roles": {
    summary: "print the vault's roles SQL, for the tables' owner to run",
    load: () => import("./vault-roles.ts"),
  },
};
