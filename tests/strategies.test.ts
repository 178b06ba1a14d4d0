/**
 * Known-answer tests for the built-in strategies: published vectors pin the primitives,
 * Python's hashlib pins sha256 compatibility, and the strategy contract is checked.
 */
import { describe, expect, it } from "vitest";
import { ConfigError, loadStrategy, type LoginRecord, maskRecord, type MaskStrategy } from "../mod.ts";
import { PII_FIELDS } from "../src/contract.ts";
import type { MaskedRecord } from "../src/masking.ts";
import { sha256Hex } from "../strategies/sha256.ts";
import { hmacSha256Hex } from "../strategies/hmac.ts";

const hex = (h: string) => Uint8Array.from(h.match(/../g)!.map((b) => parseInt(b, 16)));
const bytes = (s: string) => new TextEncoder().encode(s);

describe("sha256", () => {
  // FIPS 180-4 examples (NIST CSRC), and the empty string.
  it.each([
    ["", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"],
    ["abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"],
    [
      "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
      "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
    ],
  ])("matches the FIPS 180-4 vector for %j", (input, digest) => {
    expect(sha256Hex(input)).toBe(digest);
  });

  // Output of python3 -c "import hashlib; print(hashlib.sha256(v.encode()).hexdigest())".
  it.each([
    ["199.172.111.135", "a6d0e2f27f6111e10b06790db42f34123e724aa0fd24b280f4a0ef5ee986784c"],
    ["593-47-5928", "4f00c1a807b673887c7af517d0df68e6b41aecf8cbec26c71fe4c580664669ed"],
    ["устройство-ü-✓", "be5fd7fb06a7016ecb1e4915cc17e01a1bc45aadafb603782c4227864b0e48bf"],
  ])("matches Python's hashlib for %j", async (input, digest) => {
    const strategy = await loadStrategy("sha256", { env: {} });
    expect(await strategy.mask(input, "ip")).toBe(digest);
  });
});

describe("hmac", () => {
  // RFC 4231 section 4, HMAC-SHA-256 results of test cases 1-4, 6 and 7 (case 5 is truncated output).
  it.each([
    ["1", "0b".repeat(20), bytes("Hi There"), "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"],
    [
      "2",
      Buffer.from("Jefe").toString("hex"),
      bytes("what do ya want for nothing?"),
      "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    ],
    ["3", "aa".repeat(20), hex("dd".repeat(50)), "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"],
    [
      "4",
      "0102030405060708090a0b0c0d0e0f10111213141516171819",
      hex("cd".repeat(50)),
      "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
    ],
    [
      "6",
      "aa".repeat(131),
      bytes("Test Using Larger Than Block-Size Key - Hash Key First"),
      "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
    ],
    [
      "7",
      "aa".repeat(131),
      bytes(
        "This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm.",
      ),
      "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
    ],
  ])("matches RFC 4231 test case %s", (_case, key, data, mac) => {
    expect(hmacSha256Hex(hex(key), data)).toBe(mac);
  });

  it("masks with MASK_HMAC_KEY as the key bytes", async () => {
    const key = "0123456789abcdef0123456789abcdef";
    const strategy = await loadStrategy("hmac", { env: { MASK_HMAC_KEY: key } });
    // python3 -c "import hmac,hashlib; print(hmac.new(b'0123456789abcdef0123456789abcdef', b'199.172.111.135', hashlib.sha256).hexdigest())"
    expect(await strategy.mask("199.172.111.135", "ip")).toBe(
      "5c53df7b0d10bd4f5331b50005a103dfffd3b5fe502a6fa069e8290d533ebad3",
    );
  });

  it.each([
    [{}, /MASK_HMAC_KEY is not set/],
    [{ MASK_HMAC_KEY: "short" }, /MASK_HMAC_KEY is 5 bytes; it must be at least 32/],
    [{ MASK_HMAC_KEY: "x".repeat(31) }, /31 bytes/],
  ])("refuses a missing or short key %j", async (env, message) => {
    await expect(loadStrategy("hmac", { env })).rejects.toThrow(message);
    await expect(loadStrategy("hmac", { env })).rejects.toBeInstanceOf(ConfigError);
  });

  it("gives different masks under different keys", async () => {
    const a = await loadStrategy("hmac", { env: { MASK_HMAC_KEY: "a".repeat(32) } });
    const b = await loadStrategy("hmac", { env: { MASK_HMAC_KEY: "b".repeat(32) } });
    expect(await a.mask("10.0.0.1", "ip")).not.toBe(await b.mask("10.0.0.1", "ip"));
  });
});

describe.each(["sha256", "hmac"])("the %s strategy contract", (name) => {
  const env = { MASK_HMAC_KEY: "z".repeat(40) };
  const values = ["199.172.111.135", "::1", "593-47-5928", "z", "ü", "x".repeat(256)];

  it("is deterministic and never returns the raw value", async () => {
    const strategy = await loadStrategy(name, { env });
    for (const field of PII_FIELDS) {
      for (const value of values) {
        const masked = await strategy.mask(value, field);
        expect(masked).toBe(await strategy.mask(value, field));
        expect(masked).toMatch(/^[0-9a-f]{64}$/);
        expect(masked.includes(value)).toBe(false);
      }
    }
  });

  it("gives distinct masks to distinct values", async () => {
    const strategy = await loadStrategy(name, { env });
    const masks = new Set(await Promise.all(values.map((v) => strategy.mask(v, "ip"))));
    expect(masks.size).toBe(values.length);
  });
});

describe("loadStrategy", () => {
  it("names the valid strategies for an unknown name", async () => {
    await expect(loadStrategy("md5", { env: {} })).rejects.toThrow(
      'Unknown strategy "md5": use one of hmac, sha256, vault, ipcrypt, ipcrypt-pfx, or a path to your own module',
    );
  });

  it("loads a user's module by path", async () => {
    const strategy = await loadStrategy("tests/fixtures/reverse-strategy.ts", { env: {} });
    expect(strategy.name).toBe("reverse-sha256");
    expect(await strategy.mask("abc", "ip")).toBe(sha256Hex("cba"));
  });

  it("explains a module that does not implement the interface", async () => {
    await expect(loadStrategy("tests/fixtures/not-a-strategy.ts", { env: {} })).rejects.toThrow(
      /does not export create\(options\)/,
    );
  });

  it("explains a module path that does not exist", async () => {
    await expect(loadStrategy("./nope/missing.ts", { env: {} })).rejects.toThrow(
      /Cannot load strategy module \.\/nope\/missing\.ts/,
    );
  });
});

describe("maskRecord", () => {
  const record: LoginRecord = {
    messageId: "m-1",
    appVersion: 10203,
    createDate: "2026-01-01",
    message: {
      user_id: "u-1",
      app_version: "1.2.3",
      device_type: "ios",
      ip: "192.0.2.7",
      locale: null,
      device_id: "device-42",
    },
  };
  const masks = (m: MaskedRecord) => [m.row.masked_ip, m.row.masked_device_id];

  it("takes a strategy's answer whether it is a value, a promise or another thenable", async () => {
    const mask = (value: string) => `masked-${value.length}`;
    const answers: Array<(value: string) => unknown> = [
      mask,
      // deno-lint-ignore require-await -- a promise is the point
      async (value) => mask(value),
      (value) => ({ then: (resolve: (masked: string) => void) => resolve(mask(value)) }),
    ];
    for (const answer of answers) {
      const strategy = { name: "t", mask: answer } as MaskStrategy;
      expect(masks(await maskRecord(strategy, record))).toEqual(["masked-9", "masked-9"]);
    }
  });

  it("refuses a thenable that resolves to the raw value, as it refuses the value itself", async () => {
    const strategy = {
      name: "t",
      mask: (value: string) => ({ then: (resolve: (v: string) => void) => resolve(value) }),
    } as unknown as MaskStrategy;
    await expect(Promise.resolve().then(() => maskRecord(strategy, record))).rejects.toThrow(/containing the raw ip/);
  });
});
