/**
 * The `ipcrypt` and `ipcrypt-pfx` strategies: the published vectors of draft-denis-ipcrypt
 * both ways, address text in and out, the key checks, properties (fast-check), and the
 * CLI end to end (drain, then `scripts/ipcrypt.ts decrypt`) on the emulator and Postgres.
 */
import { isIP } from "node:net";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ConfigError, loadStrategy, type LoginRecord, maskRecord } from "../mod.ts";
import { sampleLogin, seededRandom, sendBodies } from "../scripts/produce.ts";
import { createIpCipher, type IpcryptMode } from "../strategies/_ipcrypt.ts";
import { AddressError, addressToBytes, bytesToAddress, canonicalIp, isIpv4Mapped } from "../src/ip.ts";
import { countRows, createFixture, readRows, runTool, TEST_HMAC_KEY } from "./helpers.ts";

const hex = (h: string) => Uint8Array.from(h.match(/../g)!, (b) => parseInt(b, 16));
const cipherFor = (mode: IpcryptMode, key: string) => createIpCipher(mode, hex(key));

// draft-denis-ipcrypt (ipcrypt-std/draft-denis-ipcrypt, draft-denis-ipcrypt-13), appendix
// "Test Vectors", section "ipcrypt-deterministic Test Vectors": [key, input, encrypted].
const DETERMINISTIC_VECTORS = [
  ["0123456789abcdeffedcba9876543210", "0.0.0.0", "bde9:6789:d353:824c:d7c6:f58a:6bd2:26eb"],
  ["1032547698badcfeefcdab8967452301", "255.255.255.255", "aed2:92f6:ea23:58c3:48fd:8b8:74e8:45d8"],
  ["2b7e151628aed2a6abf7158809cf4f3c", "192.0.2.1", "1dbd:c1b9:fff1:7586:7d0b:67b4:e76e:4777"],
] as const;

// The same appendix, section "ipcrypt-pfx Test Vectors": "Basic Test Vectors" under
// PFX_BASIC_KEY, and "Prefix-Preserving Test Vectors" (same /24, same /16, same /64, same
// /32) under PFX_PREFIX_KEY.
const PFX_BASIC_KEY = "0123456789abcdeffedcba98765432101032547698badcfeefcdab8967452301";
const PFX_PREFIX_KEY = "2b7e151628aed2a6abf7158809cf4f3ca9f5ba40db214c3798f2e1c23456789a";
const PFX_VECTORS = [
  [PFX_BASIC_KEY, "0.0.0.0", "151.82.155.134"],
  [PFX_BASIC_KEY, "255.255.255.255", "94.185.169.89"],
  [PFX_BASIC_KEY, "192.0.2.1", "100.115.72.131"],
  [PFX_BASIC_KEY, "2001:db8::1", "c180:5dd4:2587:3524:30ab:fa65:6ab6:f88"],
  [PFX_PREFIX_KEY, "10.0.0.47", "19.214.210.244"],
  [PFX_PREFIX_KEY, "10.0.0.129", "19.214.210.80"],
  [PFX_PREFIX_KEY, "10.0.0.234", "19.214.210.30"],
  [PFX_PREFIX_KEY, "172.16.5.193", "210.78.229.136"],
  [PFX_PREFIX_KEY, "172.16.97.42", "210.78.179.241"],
  [PFX_PREFIX_KEY, "172.16.248.177", "210.78.121.215"],
  [PFX_PREFIX_KEY, "2001:db8::a5c9:4e2f:bb91:5a7d", "7cec:702c:1243:f70:1956:125:b9bd:1aba"],
  [PFX_PREFIX_KEY, "2001:db8::7234:d8f1:3c6e:9a52", "7cec:702c:1243:f70:a3ef:c8e:95c1:cd0d"],
  [PFX_PREFIX_KEY, "2001:db8::f1e0:937b:26d4:8c1a", "7cec:702c:1243:f70:443c:c8e:6a62:b64d"],
  [PFX_PREFIX_KEY, "2001:db8:3a5c:0:e7d1:4b9f:2c8a:f673", "7cec:702c:3503:bef:e616:96bd:be33:a9b9"],
  [PFX_PREFIX_KEY, "2001:db8:9f27:0:b4e2:7a3d:5f91:c8e6", "7cec:702c:a504:b74e:194a:3d90:b047:2d1a"],
  [PFX_PREFIX_KEY, "2001:db8:d8b4:0:193c:a5e7:8b2f:46d1", "7cec:702c:f840:aa67:1b8:e84f:ac9d:77fb"],
] as const;

const envFor = (key: string) => ({ MASK_IPCRYPT_KEY: key, MASK_HMAC_KEY: TEST_HMAC_KEY });

describe.each(
  [
    ["deterministic", "ipcrypt", DETERMINISTIC_VECTORS],
    ["pfx", "ipcrypt-pfx", PFX_VECTORS],
  ] as const,
)("ipcrypt-%s: the draft's published vectors", (mode, name, vectors) => {
  it.each(vectors as ReadonlyArray<readonly [string, string, string]>)(
    "under %s encrypts %s to %s, and back",
    async (key, input, encrypted) => {
      const cipher = cipherFor(mode, key);
      expect(cipher.encrypt(input)).toBe(encrypted);
      expect(cipher.decrypt(encrypted)).toBe(input);
      const strategy = await loadStrategy(name, { env: envFor(key) });
      expect(await strategy.mask(input, "ip")).toBe(encrypted);
    },
  );
});

describe("address text", () => {
  // RFC 5952 section 4: leading zeros dropped, lower case, the longest run of two or more
  // zero words compressed (the first on a tie), a single zero word not compressed.
  it.each([
    ["2001:0db8::0001", "2001:db8::1"],
    ["2001:DB8::1", "2001:db8::1"],
    ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"],
    ["2001:db8:0:0:0:1:0:0", "2001:db8::1:0:0"],
    ["2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"],
    ["0:0:0:0:0:0:0:0", "::"],
    ["0:0:0:0:0:0:0:1", "::1"],
    ["1:0:0:0:0:0:0:0", "1::"],
    ["0:1:2:3:4:5:6:7", "0:1:2:3:4:5:6:7"],
    ["::1.2.3.4", "::102:304"],
    ["64:ff9b::192.0.2.33", "64:ff9b::c000:221"],
    // IPv4-mapped IPv6 is an IPv4 address (the draft's "IP Address Conversion").
    ["::ffff:192.0.2.1", "192.0.2.1"],
    ["::FFFF:c000:201", "192.0.2.1"],
    ["0:0:0:0:0:ffff:192.0.2.1", "192.0.2.1"],
    // A zone names the sender's interface, not the address.
    ["fe80::1%eth0", "fe80::1"],
  ])("writes %s as %s", (input, canonical) => {
    expect(canonicalIp(input)).toBe(canonical);
  });

  it("masks every spelling of one address the same, in both modes", async () => {
    for (const [name, key] of [["ipcrypt", DETERMINISTIC_VECTORS[2][0]], ["ipcrypt-pfx", PFX_PREFIX_KEY]] as const) {
      const strategy = await loadStrategy(name, { env: envFor(key) });
      for (
        const spellings of [["192.0.2.1", "::ffff:192.0.2.1", "::FFFF:C000:0201"], [
          "2001:db8::1",
          "2001:DB8:0:0:0:0:0:1",
          "2001:0db8::0:1",
        ]]
      ) {
        const masks = new Set(await Promise.all(spellings.map((s) => strategy.mask(s, "ip"))));
        expect(masks.size).toBe(1);
      }
    }
  });

  it("takes exactly the text Node's isIP takes (the validator in front of every strategy)", () => {
    const parses = (text: string) => {
      try {
        addressToBytes(text);
        return true;
      } catch (error) {
        expect(error).toBeInstanceOf(AddressError);
        return false;
      }
    };
    const nearlyAddresses = fc.string({ unit: fc.constantFrom(..."0123456789abcdefABCDEF:.%-g_"), maxLength: 45 });
    fc.assert(
      fc.property(fc.oneof(fc.ipV4(), fc.ipV6(), nearlyAddresses), (text) => {
        expect(parses(text)).toBe(isIP(text) !== 0);
      }),
      { numRuns: 5000 },
    );
  });

  it("writes IPv6 as Node's URL parser does (the WHATWG serializer compresses as RFC 5952 says)", () => {
    fc.assert(
      fc.property(fc.ipV6(), (text) => {
        const bytes = addressToBytes(text);
        fc.pre(!isIpv4Mapped(bytes));
        expect(bytesToAddress(bytes)).toBe(new URL(`http://[${text}]/`).hostname.slice(1, -1));
      }),
      { numRuns: 2000 },
    );
  });

  it("never quotes the text it refuses", () => {
    expect(() => addressToBytes("10.0.0.999")).toThrow(AddressError);
    try {
      addressToBytes("secret-10.0.0.1");
    } catch (error) {
      expect((error as Error).message).not.toContain("10.0.0.1");
    }
  });
});

describe("MASK_IPCRYPT_KEY", () => {
  const deterministicKey = DETERMINISTIC_VECTORS[0][0];
  it.each([
    [
      "ipcrypt",
      undefined,
      "MASK_IPCRYPT_KEY is not set: ipcrypt-deterministic needs a 16-byte key in hex (e.g. MASK_IPCRYPT_KEY=$(openssl rand -hex 16))",
    ],
    [
      "ipcrypt-pfx",
      "",
      "MASK_IPCRYPT_KEY is not set: ipcrypt-pfx needs a 32-byte key in hex (e.g. MASK_IPCRYPT_KEY=$(openssl rand -hex 32))",
    ],
    [
      "ipcrypt",
      "0123456789abcdeffedcba987654321g",
      "MASK_IPCRYPT_KEY is not hex: ipcrypt-deterministic needs 32 hex digits (e.g. MASK_IPCRYPT_KEY=$(openssl rand -hex 16))",
    ],
    [
      "ipcrypt",
      "0123456789abcdeffedcba987654321",
      "MASK_IPCRYPT_KEY is not hex: ipcrypt-deterministic needs 32 hex digits (e.g. MASK_IPCRYPT_KEY=$(openssl rand -hex 16))",
    ],
    [
      "ipcrypt",
      ` ${deterministicKey}`,
      "MASK_IPCRYPT_KEY is not hex: ipcrypt-deterministic needs 32 hex digits (e.g. MASK_IPCRYPT_KEY=$(openssl rand -hex 16))",
    ],
    [
      "ipcrypt",
      PFX_BASIC_KEY,
      "MASK_IPCRYPT_KEY is 32 bytes; ipcrypt-deterministic needs exactly 16 (e.g. MASK_IPCRYPT_KEY=$(openssl rand -hex 16))",
    ],
    [
      "ipcrypt-pfx",
      deterministicKey,
      "MASK_IPCRYPT_KEY is 16 bytes; ipcrypt-pfx needs exactly 32 (e.g. MASK_IPCRYPT_KEY=$(openssl rand -hex 32))",
    ],
    [
      "ipcrypt-pfx",
      deterministicKey + deterministicKey,
      "MASK_IPCRYPT_KEY's two 16-byte halves are equal: ipcrypt-pfx would leave every address unchanged (e.g. MASK_IPCRYPT_KEY=$(openssl rand -hex 32))",
    ],
  ])("%s refuses %j with one line that does not quote it", async (name, key, message) => {
    const attempt = loadStrategy(name, { env: { MASK_IPCRYPT_KEY: key, MASK_HMAC_KEY: TEST_HMAC_KEY } });
    await expect(attempt).rejects.toBeInstanceOf(ConfigError);
    await expect(attempt).rejects.toThrow(message);
    if (key) expect(message).not.toContain(key.trim());
  });

  it("accepts upper-case hex as the same key", async () => {
    const lower = await loadStrategy("ipcrypt-pfx", { env: envFor(PFX_BASIC_KEY) });
    const upper = await loadStrategy("ipcrypt-pfx", { env: envFor(PFX_BASIC_KEY.toUpperCase()) });
    expect(await upper.mask("192.0.2.1", "ip")).toBe(await lower.mask("192.0.2.1", "ip"));
  });

  it.each(["ipcrypt", "ipcrypt-pfx"])("%s needs MASK_HMAC_KEY for device_id, as hmac does", async (name) => {
    const key = name === "ipcrypt" ? deterministicKey : PFX_BASIC_KEY;
    await expect(loadStrategy(name, { env: { MASK_IPCRYPT_KEY: key } })).rejects.toThrow(/^MASK_HMAC_KEY is not set/);
    await expect(loadStrategy(name, { env: { MASK_IPCRYPT_KEY: key, MASK_HMAC_KEY: "short" } })).rejects.toThrow(
      /^MASK_HMAC_KEY is 5 bytes/,
    );
  });
});

describe.each([["ipcrypt", DETERMINISTIC_VECTORS[2][0]], ["ipcrypt-pfx", PFX_PREFIX_KEY]] as const)(
  "the %s strategy",
  (name, key) => {
    it("masks device_id exactly as hmac does, so masked_device_id joins across strategies", async () => {
      const strategy = await loadStrategy(name, { env: envFor(key) });
      const hmac = await loadStrategy("hmac", { env: { MASK_HMAC_KEY: TEST_HMAC_KEY } });
      for (const deviceId of ["593-47-5928", "1.2.3.4", "устройство-ü-✓"]) {
        expect(await strategy.mask(deviceId, "device_id")).toBe(await hmac.mask(deviceId, "device_id"));
      }
    });

    it("decrypts what it encrypts, for any IPv4 or IPv6 address in any spelling", () => {
      const cipher = cipherFor(name === "ipcrypt" ? "deterministic" : "pfx", key);
      fc.assert(
        fc.property(fc.oneof(fc.ipV4(), fc.ipV6()), (address) => {
          const encrypted = cipher.encrypt(address);
          // pfx keeps the family; deterministic writes every address as IPv6 (an IPv4-mapped
          // output, 1 in 2^96, would be the exception).
          const isIpv4 = isIpv4Mapped(addressToBytes(address));
          expect(isIP(encrypted)).toBe(name === "ipcrypt-pfx" && isIpv4 ? 4 : 6);
          expect(cipher.decrypt(encrypted)).toBe(canonicalIp(address));
        }),
        { numRuns: 1000 },
      );
    });
  },
);

/** How many leading bits two 16-byte addresses share. */
function commonPrefixBits(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < 128; i++) {
    if (((a[i >> 3]! >> (7 - (i & 7))) & 1) !== ((b[i >> 3]! >> (7 - (i & 7))) & 1)) return i;
  }
  return 128;
}

describe("ipcrypt-pfx properties", () => {
  const cipher = cipherFor("pfx", PFX_PREFIX_KEY);
  const encryptBytes = (bytes: Uint8Array) => addressToBytes(cipher.encrypt(bytesToAddress(bytes)));

  // Two addresses of one family (IPv4 as the draft maps it, or IPv6) that share exactly
  // `shared` leading bits: the second is the first with bit `shared` flipped and any bits after.
  const pairs = (family: 4 | 6) =>
    fc.tuple(
      fc.uint8Array({ minLength: 16, maxLength: 16 }),
      fc.uint8Array({ minLength: 16, maxLength: 16 }),
      fc.integer({ min: family === 4 ? 96 : 0, max: 127 }),
    ).map(([first, rest, shared]) => {
      const a = Uint8Array.from(first);
      if (family === 4) a.set([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
      const b = Uint8Array.from(a);
      for (let i = shared + 1; i < 128; i++) {
        const bit = (rest[i >> 3]! >> (7 - (i & 7))) & 1;
        b[i >> 3] = (b[i >> 3]! & ~(1 << (7 - (i & 7)))) | (bit << (7 - (i & 7)));
      }
      b[shared >> 3]! ^= 1 << (7 - (shared & 7));
      return { a, b, shared };
    });

  it.each([4, 6] as const)("keeps the common-prefix length of any two IPv%i addresses", (family) => {
    fc.assert(
      fc.property(pairs(family), ({ a, b, shared }) => {
        // An IPv6 address that happens to start ::ffff:0:0/96 is an IPv4 address: another family.
        fc.pre(family === 4 || (!isIpv4Mapped(a) && !isIpv4Mapped(b)));
        expect(commonPrefixBits(a, b)).toBe(shared);
        const [ea, eb] = [encryptBytes(a), encryptBytes(b)];
        expect(commonPrefixBits(ea, eb)).toBe(shared);
        expect(isIpv4Mapped(ea)).toBe(family === 4);
      }),
      { numRuns: 1000 },
    );
  });
});

describe("a mask that equals or contains its address by chance", () => {
  // ipcrypt-pfx maps the 2^32 IPv4 addresses onto themselves, so under any key some land
  // on themselves or on an address whose text contains theirs. These keys (SHA-256 of
  // "ipcrypt-pfx test key 100" and "... 10") and addresses were found by walking the
  // prefix tree; the first assertions prove the case, the tool must still load the row.
  const record = (ip: string): LoginRecord => ({
    messageId: "m-1",
    appVersion: 10203,
    createDate: "2026-01-01",
    message: { user_id: "u-1", app_version: "1.2.3", device_type: "ios", ip, locale: null, device_id: "device-42" },
  });
  it.each([
    ["cc7e70dafb8c3fc72acfac9d7aca4c89b87dd1eda4fb794e27c6f3f760fc6516", "13.72.64.238", "13.72.64.238"],
    ["7862a64fcecaf5bb5950cbb15194002e3b8e56509b1a4b7f210e8621e427903c", "96.71.140.14", "196.71.140.141"],
  ])("is a ciphertext, not a leak: under %s, %s -> %s loads", async (key, ip, encrypted) => {
    expect(cipherFor("pfx", key).encrypt(ip)).toBe(encrypted);
    expect(encrypted.includes(ip)).toBe(true);
    const strategy = await loadStrategy("ipcrypt-pfx", { env: envFor(key) });
    const masked = await maskRecord(strategy, record(ip));
    expect(masked.row.masked_ip).toBe(encrypted);
  });

  it("does not stop a drain: the row loads with its mask", async () => {
    const f = await createFixture();
    try {
      const [key, ip, encrypted] = [
        "7862a64fcecaf5bb5950cbb15194002e3b8e56509b1a4b7f210e8621e427903c",
        "96.71.140.14",
        "196.71.140.141",
      ];
      const login = { ...sampleLogin(seededRandom(7)), user_id: "chance-substring", ip };
      await sendBodies(f.sqs, f.queueUrl, [JSON.stringify(login)]);
      const run = await runTool(["--drain", "--strategy", "ipcrypt-pfx"], { ...f.env, MASK_IPCRYPT_KEY: key });
      expect(run.stderr).not.toMatch(/^error/m);
      expect(run.code).toBe(0);
      expect((await readRows(f.pool)).map((r) => r.masked_ip)).toEqual([encrypted]);
    } finally {
      await f.close();
    }
  });

  it("is still refused from a strategy that does not declare its ip mask format-preserving", async () => {
    const strategy = await loadStrategy("ipcrypt", { env: envFor(DETERMINISTIC_VECTORS[0][0]) });
    const echo = {
      name: "echo",
      mask: (value: string, field: "ip" | "device_id") => (field === "ip" ? value : strategy.mask(value, field)),
    };
    await expect(Promise.resolve().then(() => maskRecord(echo, record("13.72.64.238")))).rejects.toThrow(
      /containing the raw ip/,
    );
  });
});

/** Another spelling of the same address: IPv4 as IPv4-mapped IPv6, IPv6 in full and upper case. */
function respell(address: string): string {
  const bytes = addressToBytes(address);
  if (isIpv4Mapped(bytes)) return `::FFFF:${address}`;
  return Array.from(
    { length: 8 },
    (_, i) => ((bytes[2 * i]! << 8) | bytes[2 * i + 1]!).toString(16).padStart(4, "0").toUpperCase(),
  ).join(":");
}

describe("the CLI end to end, on the emulator and Postgres", () => {
  it.each(
    [
      ["ipcrypt-pfx", "pfx", PFX_PREFIX_KEY, PFX_VECTORS.filter(([key]) => key === PFX_PREFIX_KEY)],
      [
        "ipcrypt",
        "deterministic",
        DETERMINISTIC_VECTORS[2][0],
        DETERMINISTIC_VECTORS.filter(([key]) => key === DETERMINISTIC_VECTORS[2][0]),
      ],
    ] as const,
  )(
    "--strategy %s --drain loads the draft's vectors, and decrypt --mode %s gives the originals back",
    async (name, mode, key, vectors) => {
      const f = await createFixture();
      try {
        // Each vector's address as the draft writes it and spelled otherwise, beside sample logins.
        const random = seededRandom(15);
        const cases = [
          ...vectors.flatMap(([, input, encrypted]) => [{ ip: input, encrypted }, { ip: respell(input), encrypted }]),
          ...Array.from({ length: 20 }, () => ({ ip: sampleLogin(random).ip as string, encrypted: undefined })),
        ];
        const logins: Array<Record<string, unknown>> = cases.map((c, i) => ({
          ...sampleLogin(random),
          user_id: `ipcrypt-${String(i).padStart(2, "0")}`,
          ip: c.ip,
        }));
        await sendBodies(f.sqs, f.queueUrl, logins.map((login) => JSON.stringify(login)));

        const run = await runTool(["--drain", "--strategy", name], { ...f.env, MASK_IPCRYPT_KEY: key });
        expect(run.stderr).not.toMatch(/^error/m);
        expect(run.code).toBe(0);
        expect(run.stdout).toMatch(new RegExp(`^loaded=${cases.length} duplicates=0 dead_lettered=0 left_in_queue=0`));
        expect(await countRows(f.pool)).toBe(cases.length);

        const cipher = cipherFor(mode, key);
        const hmac = await loadStrategy("hmac", { env: { MASK_HMAC_KEY: TEST_HMAC_KEY } });
        const rows = [...await readRows(f.pool)];
        for (const [i, row] of rows.entries()) {
          expect(row.user_id).toBe(logins[i]!.user_id);
          expect(row.masked_ip).toBe(cases[i]!.encrypted ?? cipher.encrypt(cases[i]!.ip));
          expect(row.masked_device_id).toBe(await hmac.mask(logins[i]!.device_id as string, "device_id"));
          expect(run.stderr).not.toContain(cases[i]!.ip);
        }

        const decrypt = await runTool(["decrypt", "--mode", mode, ...rows.map((r) => r.masked_ip)], {
          MASK_IPCRYPT_KEY: key,
          DATABASE_URL: f.databaseUrl,
        }, "scripts/ipcrypt.ts");
        expect(decrypt.stderr).toBe("");
        expect(decrypt.code).toBe(0);
        expect(decrypt.stdout).toBe(cases.map((c) => `${canonicalIp(c.ip)}\n`).join(""));
      } finally {
        await f.close();
      }
    },
  );
});

describe("scripts/ipcrypt.ts", () => {
  it.each([
    [
      ["decrypt", "--mode", "pfx", "19.214.210.244"],
      "zz",
      "error: MASK_IPCRYPT_KEY is not hex: ipcrypt-pfx needs 64 hex digits (e.g. MASK_IPCRYPT_KEY=$(openssl rand -hex 32))\n",
    ],
    [
      ["decrypt", "--mode", "deterministic", "19.214.210.244"],
      PFX_PREFIX_KEY,
      "error: MASK_IPCRYPT_KEY is 32 bytes; ipcrypt-deterministic needs exactly 16 (e.g. MASK_IPCRYPT_KEY=$(openssl rand -hex 16))\n",
    ],
    [
      ["decrypt", "--mode", "pfx", "19.214.210.244", "19.214.210.999"],
      PFX_PREFIX_KEY,
      "error: address 2 of 2: not an IPv4 or IPv6 address\n",
    ],
    [
      ["decrypt", "--mode", "cbc", "19.214.210.244"],
      PFX_PREFIX_KEY,
      "error: --mode must be deterministic or pfx (run with --help)\n",
    ],
    [
      ["decrypt", "--mode", "pfx"],
      PFX_PREFIX_KEY,
      "error: no address given: decrypt --mode MODE ADDRESS... (run with --help)\n",
    ],
  ])("exits 2 with one line and prints nothing for %j", async (argv, key, message) => {
    const run = await runTool(argv, { MASK_IPCRYPT_KEY: key }, "scripts/ipcrypt.ts");
    expect(run.code).toBe(2);
    expect(run.stderr).toBe(message);
    expect(run.stdout).toBe("");
    expect(run.stderr).not.toContain(PFX_PREFIX_KEY);
  });

  it("says in its help that the key decrypts everything", async () => {
    const run = await runTool(["--help"], {}, "scripts/ipcrypt.ts");
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/Whoever holds that key can decrypt every address/);
  });
});
