/**
 * The one way a command ends on a failure: one line on stderr, and the exit code of its kind.
 */
import process from "node:process";
import { afterEach, describe, expect, it, vi } from "vitest";
import { ConfigError, EXIT_FAILURE, EXIT_USAGE, failed, FatalError } from "../../src/errors.ts";

describe("failed", () => {
  const written: string[] = [];
  afterEach(() => {
    vi.restoreAllMocks();
    written.length = 0;
  });
  const capture = () =>
    vi.spyOn(process.stderr, "write").mockImplementation((chunk: string | Uint8Array) => {
      written.push(String(chunk));
      return true;
    });

  it("says a ConfigError's message in one line and exits 2", () => {
    capture();
    expect(failed(new ConfigError("--batch-size takes 1 to 10000, got 0"))).toBe(EXIT_USAGE);
    expect(written).toEqual(["error: --batch-size takes 1 to 10000, got 0\n"]);
  });

  it("exits 1 for any other failure, in the words `describe` gives", () => {
    capture();
    expect(failed(new FatalError("raw"), { describe: () => "Cannot reach Postgres at …" })).toBe(EXIT_FAILURE);
    expect(written).toEqual(["error: Cannot reach Postgres at …\n"]);
  });

  it("says only the first line of a message that has more (a stack, a dump)", () => {
    capture();
    expect(failed(new Error("connect failed\n    at Socket.connect (node:net)\n"))).toBe(EXIT_FAILURE);
    expect(failed(new FatalError("x"), { describe: () => "first\nsecond" })).toBe(EXIT_FAILURE);
    expect(written).toEqual(["error: connect failed\n", "error: first\n"]);
  });

  it("exits 2 for any error while reading the arguments", () => {
    capture();
    expect(failed(new Error("a user's strategy module threw"), { usage: true })).toBe(EXIT_USAGE);
    expect(written).toHaveLength(1);
  });
});
