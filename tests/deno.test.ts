/** The same tool under Deno: help, a configuration error, and a real drain with the same flags. */
import { describe, expect, it } from "vitest";
import { loadStrategy } from "../mod.ts";
import { INVALID_BODIES, sampleBodies, sendBodies } from "../scripts/produce.ts";
import { countRows, createFixture, readRows, receiveAll, runDeno, TEST_HMAC_KEY } from "./helpers.ts";

describe("deno run -A mod.ts", () => {
  it("prints help", async () => {
    const { code, stdout } = await runDeno(["--help"], {});
    expect(code).toBe(0);
    expect(stdout).toContain("--strategy NAME|PATH");
  });

  it("exits 2 with one line for a bad flag", async () => {
    const { code, stderr } = await runDeno(["--concurrency", "0"], {});
    expect(code).toBe(2);
    expect(stderr).toBe('error: --concurrency must be a whole number from 1 to 64, got "0"\n');
  });

  it("drains a mixed batch into Postgres and the DLQ", async () => {
    const f = await createFixture();
    try {
      const valid = sampleBodies(40, 0, 21);
      await sendBodies(f.sqs, f.queueUrl, [...valid, ...INVALID_BODIES.slice(0, 4).map((i) => i.body)]);
      const run = await runDeno(["--drain", "--strategy", "hmac"], f.env);
      expect(run.stderr).not.toMatch(/^error/m);
      expect(run.code).toBe(0);
      expect(run.stdout).toMatch(/^loaded=40 duplicates=0 dead_lettered=4/);
      expect(await countRows(f.pool)).toBe(40);
      const strategy = await loadStrategy("hmac", { env: { MASK_HMAC_KEY: TEST_HMAC_KEY } });
      const byUser = new Map((await readRows(f.pool)).map((r) => [r.user_id, r]));
      for (const body of valid) {
        const m = JSON.parse(body);
        expect(byUser.get(m.user_id)?.masked_ip).toBe(await strategy.mask(m.ip, "ip"));
        expect(run.stderr).not.toContain(m.ip);
        expect(run.stderr).not.toContain(m.device_id);
      }
      expect(await receiveAll(f.sqs, f.dlqUrl)).toHaveLength(4);
    } finally {
      await f.close();
    }
  });
});
