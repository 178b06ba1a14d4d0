/**
 * The same tool under Deno: help, a configuration error, and real drains with the same
 * flags (hmac, and ipcrypt-pfx with its recovery script).
 */
import { describe, expect, it } from "vitest";
import { loadStrategy } from "../mod.ts";
import { INVALID_BODIES, sampleBodies, sampleLogin, seededRandom, sendBodies } from "../scripts/produce.ts";
import { canonicalAddress } from "../strategies/_ipcrypt.ts";
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

  it("drains with --strategy ipcrypt-pfx into the draft's vectors, and decrypts them back", async () => {
    // draft-denis-ipcrypt, appendix "Test Vectors", ipcrypt-pfx "Basic Test Vectors".
    const key = "0123456789abcdeffedcba98765432101032547698badcfeefcdab8967452301";
    const vectors = [
      ["0.0.0.0", "151.82.155.134"], ["255.255.255.255", "94.185.169.89"], ["192.0.2.1", "100.115.72.131"],
      ["2001:db8::1", "c180:5dd4:2587:3524:30ab:fa65:6ab6:f88"], ["::FFFF:192.0.2.1", "100.115.72.131"],
    ];
    const f = await createFixture();
    try {
      const random = seededRandom(31);
      const logins = vectors.map(([ip], i) => ({ ...sampleLogin(random), user_id: `deno-pfx-${i}`, ip }));
      await sendBodies(f.sqs, f.queueUrl, logins.map((login) => JSON.stringify(login)));
      const run = await runDeno(["--drain", "--strategy", "ipcrypt-pfx"], { ...f.env, MASK_IPCRYPT_KEY: key });
      expect(run.stderr).not.toMatch(/^error/m);
      expect(run.code).toBe(0);
      expect(run.stdout).toMatch(/^loaded=5 duplicates=0 dead_lettered=0/);
      const rows = await readRows(f.pool);
      expect(rows.map((r) => r.masked_ip)).toEqual(vectors.map(([, encrypted]) => encrypted));

      const decrypt = await runDeno(["decrypt", "--mode", "pfx", ...rows.map((r) => r.masked_ip)], { MASK_IPCRYPT_KEY: key }, "scripts/ipcrypt.ts");
      expect(decrypt.stderr).toBe("");
      expect(decrypt.code).toBe(0);
      expect(decrypt.stdout).toBe(vectors.map(([ip]) => `${canonicalAddress(ip!)}\n`).join(""));
    } finally {
      await f.close();
    }
  });
});
