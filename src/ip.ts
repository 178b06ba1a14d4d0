/**
 * IP address text, one form per address: parsed into the 16 bytes of RFC 4291 (IPv4 as
 * IPv4-mapped IPv6) and written back canonically. The message schema writes every `ip` this
 * way before a strategy sees it, and the ipcrypt ciphers work on the same 16 bytes, so
 * every strategy masks one address alike however it was written. A leaf: it imports
 * nothing of the project, and says nothing of the address in its errors.
 *
 * @module
 */

/** The first 12 bytes of an IPv4-mapped IPv6 address (::ffff:0:0/96, RFC 4291 section 2.5.5.2). */
const IPV4_MAPPED_PREFIX = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff] as const;

/** An address text that is no IPv4 or IPv6 address; it never quotes the text. */
export class AddressError extends Error {
  override name = "AddressError";
}

// ---------------------------------------------------------------------------------------
// Address text <-> 16 bytes (the draft's section "IP Address Conversion")
// ---------------------------------------------------------------------------------------

const DECIMAL_OCTET = /^(?:0|[1-9][0-9]{0,2})$/;
const HEX_GROUP = /^[0-9a-fA-F]{1,4}$/;
/** The zone characters Node's `isIP` (the message validator) takes. */
const ZONE = /^[0-9a-zA-Z.:-]+$/;

/** Dotted-quad IPv4 into `out` at `offset`; false if it is not exactly four octets 0-255. */
function parseIpv4Into(text: string, out: Uint8Array, offset: number): boolean {
  const parts = text.split(".");
  if (parts.length !== 4) return false;
  for (let i = 0; i < 4; i++) {
    const part = parts[i];
    if (!DECIMAL_OCTET.test(part)) return false;
    const octet = Number(part);
    if (octet > 255) return false;
    out[offset + i] = octet;
  }
  return true;
}

/** Colon-separated hex groups as 16-bit words; null if any group is malformed. */
function parseHexGroups(text: string): number[] | null {
  if (text === "") return [];
  const words: number[] = [];
  for (const group of text.split(":")) {
    if (!HEX_GROUP.test(group)) return null;
    words.push(parseInt(group, 16));
  }
  return words;
}

/**
 * The 16-byte form of an address in any valid text form: IPv6 network order (RFC 4291),
 * IPv4 as IPv4-mapped IPv6, so `1.2.3.4` and `::ffff:1.2.3.4` are the same 16 bytes.
 * Upper or lower case, compressed or not, with an embedded IPv4 tail. A zone (`%eth0`)
 * names an interface on the sender's host, not part of the address: it is dropped.
 *
 * @throws {AddressError} for text that is no address
 */
export function addressToBytes(text: string): Uint8Array {
  const bytes = new Uint8Array(16);
  if (!text.includes(":")) {
    if (!parseIpv4Into(text, bytes, 12)) throw new AddressError("not an IPv4 or IPv6 address");
    bytes.set(IPV4_MAPPED_PREFIX);
    return bytes;
  }
  const zone = text.indexOf("%");
  let address = zone === -1 ? text : text.slice(0, zone);
  if (zone !== -1 && !ZONE.test(text.slice(zone + 1))) throw new AddressError("not an IPv6 address: bad zone");
  // An embedded IPv4 tail (`::ffff:1.2.3.4`, `64:ff9b::1.2.3.4`) stands for the last two words.
  let tail: Uint8Array | undefined;
  const lastColon = address.lastIndexOf(":");
  if (address.includes(".", lastColon)) {
    tail = new Uint8Array(4);
    if (!parseIpv4Into(address.slice(lastColon + 1), tail, 0)) {
      throw new AddressError("not an IPv6 address: bad IPv4 tail");
    }
    // Keep the colon before the tail as the end of the groups ("::" stays "::").
    address = address.slice(0, lastColon + 1) + "0:0";
  }
  const halves = address.split("::");
  if (halves.length > 2) throw new AddressError("not an IPv6 address: more than one '::'");
  const head = parseHexGroups(halves[0]);
  const rest = halves.length === 2 ? parseHexGroups(halves[1]) : [];
  if (head === null || rest === null) throw new AddressError("not an IPv6 address: bad group");
  const explicit = head.length + rest.length;
  // "::" stands for one or more zero words (RFC 4291 section 2.2), so at most 7 explicit ones.
  if (halves.length === 2 ? explicit > 7 : explicit !== 8) {
    throw new AddressError("not an IPv6 address: wrong number of groups");
  }
  const words = [...head, ...new Array<number>(8 - explicit).fill(0), ...rest];
  for (let i = 0; i < 8; i++) {
    bytes[2 * i] = words[i] >> 8;
    bytes[2 * i + 1] = words[i] & 0xff;
  }
  if (tail) bytes.set(tail, 12);
  return bytes;
}

/** Whether 16 bytes are an IPv4-mapped IPv6 address, i.e. an IPv4 address. */
export function isIpv4Mapped(bytes: Uint8Array): boolean {
  for (let i = 0; i < IPV4_MAPPED_PREFIX.length; i++) if (bytes[i] !== IPV4_MAPPED_PREFIX[i]) return false;
  return true;
}

/**
 * Canonical text for 16 bytes: an IPv4-mapped address as dotted IPv4 (the draft's
 * conversion), anything else as IPv6 per RFC 5952 section 4: lower case, no leading zeros,
 * the longest run of two or more zero words (the first, on a tie) as `::`.
 */
export function bytesToAddress(bytes: Uint8Array): string {
  if (isIpv4Mapped(bytes)) return `${bytes[12]}.${bytes[13]}.${bytes[14]}.${bytes[15]}`;
  const words: number[] = [];
  for (let i = 0; i < 16; i += 2) words.push((bytes[i] << 8) | bytes[i + 1]);
  let bestStart = -1;
  let bestLength = 1; // RFC 5952 section 4.2.2: a single zero word is not compressed
  for (let i = 0; i < 8;) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let end = i;
    while (end < 8 && words[end] === 0) end++;
    if (end - i > bestLength) [bestStart, bestLength] = [i, end - i];
    i = end;
  }
  const hex = (from: number, to: number) => words.slice(from, to).map((w) => w.toString(16)).join(":");
  if (bestStart === -1) return hex(0, 8);
  return `${hex(0, bestStart)}::${hex(bestStart + bestLength, 8)}`;
}

/** Whether a text is an IPv4 or IPv6 address (with or without a zone) that {@link canonicalIp} can write. */
export function isIpAddress(text: string): boolean {
  try {
    addressToBytes(text);
    return true;
  } catch {
    return false;
  }
}

/**
 * An IP address as one text per address, so that equal addresses mask equal: IPv6 as
 * RFC 5952 writes it (lowercase, no leading zeros, the first longest run of zero groups as
 * `::`), an IPv4-mapped address (`::ffff:203.0.113.9`) as the IPv4 address it maps, a dotted
 * IPv4 address unchanged. A zone (`%eth0`) names an interface on the sender's host, not part
 * of the address, and no 16-byte form can hold it: it is dropped.
 *
 * @param ip an address {@link isIpAddress} accepts
 * @throws {AddressError} for text that is no address
 * @example
 * ```ts
 * canonicalIp("2001:DB8::ABCD"); // "2001:db8::abcd"
 * canonicalIp("::ffff:203.0.113.9"); // "203.0.113.9"
 * canonicalIp("fe80::1%eth0"); // "fe80::1"
 * ```
 */
export function canonicalIp(ip: string): string {
  // Dotted IPv4 has one form (net.isIP takes no leading zeros, hex or short forms): the
  // common case costs no parse.
  if (!ip.includes(":")) return ip;
  return bytesToAddress(addressToBytes(ip));
}
