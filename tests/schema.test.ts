/** Validation, table-driven: what loads, what is refused and why, and app_version encoding. */
import type { Message } from "@aws-sdk/client-sqs";
import { describe, expect, it } from "vitest";
import { canonicalIp, decodeAppVersion, decodeMessage, loadStrategy, maskRecord } from "../mod.ts";
import { encodeAppVersion } from "../src/schema.ts";
import { EDGE_CASE_BODIES, INVALID_BODIES } from "../scripts/produce.ts";

const SENT = Date.UTC(2024, 0, 31, 23, 59, 59);
const message = (body: string, sentTimestamp: number | null = SENT): Message => ({
  MessageId: "m-1",
  ReceiptHandle: "r-1",
  Body: body,
  Attributes: sentTimestamp === null ? {} : { SentTimestamp: String(sentTimestamp) },
});
const valid = {
  user_id: "424cdd21-063a-43a7-b91b-7ca1a833afae",
  app_version: "2.3.0",
  device_type: "android",
  ip: "199.172.111.135",
  locale: "RU",
  device_id: "593-47-5928",
};

describe("app_version encoding", () => {
  it.each([
    ["0.0.0", 0],
    ["2.3.4", 20304],
    ["2.3.0", 20300],
    ["99.99.99", 999999],
    ["1.10.0", 11000],
    ["10.0.1", 100001],
  ])("encodes %s as %i and reads it back", (version, encoded) => {
    expect(encodeAppVersion(version)).toBe(encoded);
    expect(decodeAppVersion(encoded)).toBe(version);
  });

  it.each(["2.3", "2.3.4.5", "100.0.0", "1.100.0", "1.0.100", "-1.0.0", "a.b.c", "", " 1.2.3", "1.2.3 "])(
    "refuses %j",
    (version) => expect(encodeAppVersion(version)).toBeUndefined(),
  );

  it("sorts like the version", () => {
    const versions = ["1.10.0", "1.9.9", "10.0.0", "2.0.0", "1.2.10", "1.2.9"];
    const byCode = [...versions].sort((a, b) => encodeAppVersion(a)! - encodeAppVersion(b)!);
    expect(byCode).toEqual(["1.2.9", "1.2.10", "1.9.9", "1.10.0", "2.0.0", "10.0.0"]);
  });
});

describe("decodeMessage", () => {
  it("decodes the example from the design brief", () => {
    const decoded = decodeMessage(message(JSON.stringify(valid)));
    expect(decoded).toEqual({
      ok: true,
      record: { messageId: "m-1", message: valid, appVersion: 20300, createDate: "2024-01-31" },
    });
  });

  it("takes create_date from SentTimestamp as a UTC date", () => {
    const decoded = decodeMessage(message(JSON.stringify(valid), Date.UTC(2024, 1, 29, 0, 0, 0)));
    expect(decoded.ok && decoded.record.createDate).toBe("2024-02-29");
  });

  it.each(EDGE_CASE_BODIES.map((body) => [JSON.parse(body).user_id.slice(0, 20), body]))(
    "accepts the edge case %s",
    (_name, body) => {
      expect(decodeMessage(message(body)).ok).toBe(true);
    },
  );

  it.each(INVALID_BODIES.map(({ body, reason }) => [body.slice(0, 40), body, reason]))(
    "refuses %j",
    (_name, body, reason) => {
      const decoded = decodeMessage(message(body));
      expect(decoded.ok).toBe(false);
      expect(!decoded.ok && decoded.reason).toContain(reason);
    },
  );

  it.each([
    ["locale too long", { ...valid, locale: "x".repeat(33) }, "locale:"],
    ["user_id empty", { ...valid, user_id: "" }, "user_id:"],
    ["user_id too long", { ...valid, user_id: "u".repeat(129) }, "user_id:"],
    ["ip not a string", { ...valid, ip: 3232235777 }, "ip:"],
    ["ip with a port", { ...valid, ip: "1.2.3.4:80" }, "ip:"],
    ["device_id empty", { ...valid, device_id: "" }, "device_id:"],
    ["device_id too long", { ...valid, device_id: "d".repeat(257) }, "device_id:"],
    ["app_version a number", { ...valid, app_version: 2.3 }, "app_version:"],
    ["device_type null", { ...valid, device_type: null }, "device_type:"],
    ["locale a number", { ...valid, locale: 7 }, "locale:"],
  ])("refuses %s", (_name, body, reason) => {
    const decoded = decodeMessage(message(JSON.stringify(body)));
    expect(!decoded.ok && decoded.reason).toContain(reason);
  });

  it("accepts a null or missing locale as null", () => {
    for (const body of [{ ...valid, locale: null }, { ...valid, locale: undefined }]) {
      expect(decodeMessage(message(JSON.stringify(body))).ok).toBe(true);
    }
  });

  it("refuses a message without SentTimestamp", () => {
    expect(decodeMessage(message(JSON.stringify(valid), null))).toEqual({
      ok: false,
      reason: "message has no SentTimestamp attribute",
    });
  });

  it("never puts a value in a reason", () => {
    const secretIp = "203.0.113.77";
    const secretDevice = "SECRET-DEVICE-123";
    const bodies = [
      `{"ip": "${secretIp}", "device_id": "${secretDevice}"`, // truncated JSON: V8's message would quote it
      JSON.stringify({ ...valid, ip: secretIp + "x", device_id: secretDevice, app_version: "bad" }),
      JSON.stringify({ ...valid, ip: secretIp, device_id: secretDevice.repeat(30) }),
    ];
    for (const body of bodies) {
      const decoded = decodeMessage(message(body));
      expect(decoded.ok).toBe(false);
      expect(!decoded.ok && decoded.reason).not.toMatch(/203\.0\.113|SECRET-DEVICE/);
    }
  });
});

describe("input fidelity: equal values mask equal, different values never collide", () => {
  const emoji = "\u{1F600}"; // one character (code point), two UTF-16 units

  it.each(
    [
      ["user_id", 128],
      ["device_type", 32],
      ["locale", 32],
      ["device_id", 256],
    ] as const,
  )("counts %s in characters, as varchar(%i) does", (field, max) => {
    expect(decodeMessage(message(JSON.stringify({ ...valid, [field]: emoji.repeat(max) }))).ok).toBe(true);
    const tooLong = decodeMessage(message(JSON.stringify({ ...valid, [field]: emoji.repeat(max + 1) })));
    expect(!tooLong.ok && tooLong.reason).toBe(`${field}: at most ${max} characters`);
  });

  it.each(["user_id", "device_type", "locale", "device_id"])(
    "refuses an unpaired surrogate in %s, naming no value",
    (field) => {
      // JSON can carry one as an escape; it would reach Postgres and the hash as U+FFFD.
      for (const text of ["\uD800", "ab\uDC00", "x\uD83D"]) {
        const decoded = decodeMessage(message(JSON.stringify({ ...valid, [field]: text })));
        expect(decoded).toEqual({ ok: false, reason: `${field}: not valid Unicode (an unpaired surrogate)` });
      }
      // A pair is a character like any other.
      expect(decodeMessage(message(JSON.stringify({ ...valid, [field]: "\uD83D\uDE00" }))).ok).toBe(true);
    },
  );

  it.each([
    ["2001:DB8::ABCD", "2001:db8::abcd"],
    ["2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"],
    ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"], // the first of two equal runs of zeros
    ["2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"], // one zero group is not compressed
    ["::ffff:203.0.113.9", "203.0.113.9"], // IPv4-mapped: the IPv4 address
    ["::FFFF:CB00:7109", "203.0.113.9"],
    ["0:0:0:0:0:ffff:203.0.113.9", "203.0.113.9"],
    ["64:ff9b::203.0.113.9", "64:ff9b::cb00:7109"], // not mapped: RFC 5952 hex
    ["FE80::1%eth0", "fe80::1"], // a zone names the sender's interface, not the address
    ["203.0.113.9", "203.0.113.9"],
    ["::", "::"],
  ])("writes %s as %s (RFC 5952; IPv4-mapped as IPv4)", (written, canonical) => {
    expect(canonicalIp(written)).toBe(canonical);
  });

  it("masks one address written two ways alike", async () => {
    const strategy = await loadStrategy("sha256", { env: {} });
    const maskedIp = async (ip: string) => {
      const decoded = decodeMessage(message(JSON.stringify({ ...valid, ip })));
      if (!decoded.ok) throw new Error(decoded.reason);
      return (await maskRecord(strategy, decoded.record)).row.masked_ip;
    };
    expect(await maskedIp("2001:DB8::ABCD")).toBe(await maskedIp("2001:db8::abcd"));
    expect(await maskedIp("::ffff:203.0.113.9")).toBe(await maskedIp("203.0.113.9"));
    expect(await maskedIp("2001:db8::abcd")).not.toBe(await maskedIp("2001:db8::abce"));
  });

  it("masks a zoned address as every strategy reads it: hmac and ipcrypt see the same address", async () => {
    const env = { MASK_HMAC_KEY: "k".repeat(32), MASK_IPCRYPT_KEY: "0123456789abcdeffedcba9876543210" };
    const masked = async (name: string, ip: string) => {
      const decoded = decodeMessage(message(JSON.stringify({ ...valid, ip })));
      if (!decoded.ok) throw new Error(decoded.reason);
      return (await maskRecord(await loadStrategy(name, { env }), decoded.record)).row.masked_ip;
    };
    for (const name of ["hmac", "sha256", "ipcrypt"]) {
      expect(await masked(name, "fe80::1%eth0"), name).toBe(await masked(name, "fe80::1"));
    }
  });

  it("keeps sha256 of a plain dotted IPv4 byte-identical to Python's hashlib", async () => {
    const strategy = await loadStrategy("sha256", { env: {} });
    const decoded = decodeMessage(message(JSON.stringify({ ...valid, ip: "199.172.111.135" })));
    if (!decoded.ok) throw new Error(decoded.reason);
    // python3 -c "import hashlib; print(hashlib.sha256('199.172.111.135'.encode()).hexdigest())"
    expect((await maskRecord(strategy, decoded.record)).row.masked_ip)
      .toBe("a6d0e2f27f6111e10b06790db42f34123e724aa0fd24b280f4a0ef5ee986784c");
  });
});
