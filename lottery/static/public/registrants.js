// The published registrant list, streamed and digested as it arrives (docs/draw-spec.md
// sections 3, 4 and 12.4): each line is parsed from the bytes, checked, turned into its
// registration leaf and hashed into the RFC 6962 root, with no allocation per line. The tickets
// and strata are kept in typed arrays for the recomputation, and, when the seed is known, the
// first 64 bits of every ticket's score (section 9.1), which decide nearly every comparison.
// The rules are docs/draw-spec.md's R12.4.1-R12.4.7 and R3.3, as lottery/parallel.py applies them.

import { MerkleRoot, Sha256Buffer } from "./hashing.js";

export class ListError extends Error {}

const CSV_HEADER = "ticket,pseudonym,stratum";
const NEWLINE = 10, COMMA = 44, QUOTE = 34, BACKSLASH = 92, ZERO = 48, NINE = 57;
const SCORE_DOMAIN = new TextEncoder().encode("stimulus/score/v1");
const TWO32 = 4294967296;
const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });
const latin = new TextDecoder("latin1");
const NDJSON_HEAD = encoder.encode('{"pseudonym":"');
const NDJSON_MIDDLE = encoder.encode('","stratum":"');
const NDJSON_TAIL = encoder.encode('","ticket":');

// A ticket as text for messages; tickets are u64, kept as two 32-bit halves.
export const ticketText = (hi, lo) => (hi ? (BigInt(hi) * 4294967296n + BigInt(lo)).toString() : String(lo));

// Growable typed arrays, one slot per line.
class Column {
  constructor(Type, capacity) { this.Type = Type; this.data = new Type(capacity); }
  ensure(size) {
    if (size <= this.data.length) return;
    const grown = new this.Type(Math.max(size, this.data.length * 2));
    grown.set(this.data);
    this.data = grown;
  }
}

// options: campaignId, strata (the campaign's stratum ids), seed (32 bytes, or null: no scores),
// expected (the committed tree size: a first guess of the line count), onProgress(lines, bytes).
export class ListDigest {
  constructor({ campaignId, strata, seed, expected }) {
    const campaign = encoder.encode(campaignId);
    if (campaign.length < 1 || campaign.length > 255) throw new ListError("campaign id must be 1-255 bytes");
    this.strata = strata.map((s) => encoder.encode(s));
    this.stratumCounts = new Float64Array(strata.length);
    // leaf hash input: 0x00 (RFC 6962 leaf) || 0x01 (version) || u64 ticket || lp(campaign) || lp(p) || lp(s)
    this.leaf = new Sha256Buffer(2 + 8 + 2 + campaign.length + 2 + 255 + 2 + 255);
    this.leaf.bytes[0] = 0;
    this.leaf.bytes[1] = 1;
    this.leaf.view.setUint16(10, campaign.length);
    this.leaf.bytes.set(campaign, 12);
    this.afterCampaign = 12 + campaign.length;
    this.hashOut = new Uint8Array(32);
    this.hashView = new DataView(this.hashOut.buffer);
    this.tree = new MerkleRoot();
    this.seed = seed;
    if (seed) {
      this.score = new Sha256Buffer(57);
      this.score.bytes.set(SCORE_DOMAIN, 0);
      this.score.bytes.set(seed, 17);
    }
    const capacity = Math.max(16, Math.min(expected || 0, 1 << 22) + 1);
    this.hi = new Column(Uint32Array, capacity);
    this.lo = new Column(Uint32Array, capacity);
    this.stratumOf = new Column(Uint16Array, capacity);
    this.score0 = new Column(Uint32Array, seed ? capacity : 0);
    this.score1 = new Column(Uint32Array, seed ? capacity : 0);
    this.count = 0;
    this.bytes = 0;
    this.format = null;  // "csv" or "ndjson", told by the first line
    this.carry = new Uint8Array(1024);
    this.carried = 0;
    this.ndjsonLine = new Uint8Array(1024);
    this.lastStratum = 0;
  }

  // Feed the next piece of the stream.
  push(chunk) {
    this.bytes += chunk.length;
    let start = 0;
    if (this.carried) {
      const newline = chunk.indexOf(NEWLINE);
      const end = newline < 0 ? chunk.length : newline;
      this.carryAppend(chunk, 0, end);
      if (newline < 0) return;
      this.line(this.carry, 0, this.carried);
      this.carried = 0;
      start = newline + 1;
    }
    for (;;) {
      const newline = chunk.indexOf(NEWLINE, start);
      if (newline < 0) break;
      this.line(chunk, start, newline);
      start = newline + 1;
    }
    if (start < chunk.length) this.carryAppend(chunk, start, chunk.length);
  }

  carryAppend(chunk, from, to) {
    const need = this.carried + (to - from);
    if (need > this.carry.length) {
      const grown = new Uint8Array(Math.max(need, this.carry.length * 2));
      grown.set(this.carry.subarray(0, this.carried));
      this.carry = grown;
    }
    this.carry.set(chunk.subarray(from, to), this.carried);
    this.carried = need;
  }

  // The stream ended. Every line ends with LF, the last one too (rule R12.4.1).
  finish() {
    if (this.carried) throw new ListError("the last line does not end with a newline");
    return this.tree.root();
  }

  line(bytes, start, end) {
    if (this.format === null) {
      const text = latin.decode(bytes.subarray(start, end));
      if (text === CSV_HEADER) { this.format = "csv"; return; }
      if (bytes[start] !== 123) throw new ListError("expected the CSV header or NDJSON objects");
      this.format = "ndjson";
    }
    if (this.format === "csv") this.csvLine(bytes, start, end);
    else this.ndjsonLineOf(bytes, start, end);
  }

  // ticket,pseudonym,stratum: exactly three fields, no quoting.
  csvLine(bytes, start, end) {
    const first = indexOfIn(bytes, COMMA, start, end);
    const second = first < 0 ? -1 : indexOfIn(bytes, COMMA, first + 1, end);
    if (second < 0 || indexOfIn(bytes, COMMA, second + 1, end) >= 0) {
      throw new ListError(`line ${this.count + 1}: expected ticket,pseudonym,stratum`);
    }
    // The ticket: ASCII digits, no leading zero, below 2^64 (rule R12.4.2); in two 32-bit halves.
    if (first === start) throw new ListError(`line ${this.count + 1}: an empty ticket`);
    let hi = 0, lo = 0;
    for (let i = start; i < first; i++) {
      const digit = bytes[i] - ZERO;
      if (digit < 0 || digit > 9) throw new ListError(`line ${this.count + 1}: the ticket is not a number`);
      const low = lo * 10 + digit;
      const carry = Math.floor(low / TWO32);
      lo = low - carry * TWO32;
      hi = hi * 10 + carry;
      if (hi >= TWO32) throw new ListError(`line ${this.count + 1}: the ticket does not fit in 64 bits`);
    }
    if (bytes[start] === ZERO && first - start > 1) {
      throw new ListError(`ticket ${ticketText(hi, lo)} is not a canonical number (leading zero)`);
    }
    this.add(hi, lo, bytes, first + 1, second, bytes, second + 1, end);
  }

  // One registrant: order, stratum, pseudonym length and UTF-8, then its leaf and score.
  add(hi, lo, names, nameStart, nameEnd, groups, stratumStart, stratumEnd) {
    const n = this.count;
    if (n > 0) {
      const ph = this.hi.data[n - 1], pl = this.lo.data[n - 1];
      if (hi < ph || (hi === ph && lo <= pl)) throw new ListError(`ticket ${ticketText(hi, lo)} out of order or repeated`);
    }
    const stratum = this.stratumIndex(groups, stratumStart, stratumEnd);
    if (stratum < 0) {
      throw new ListError(`ticket ${ticketText(hi, lo)} is in an unknown stratum ${JSON.stringify(
        latin.decode(groups.subarray(stratumStart, stratumEnd)))}`);
    }
    const nameLength = nameEnd - nameStart;
    if (nameLength < 1 || nameLength > 255) {
      throw new ListError(`ticket ${ticketText(hi, lo)}: pseudonym must be 1-255 bytes`);
    }
    for (let i = nameStart; i < nameEnd; i++) {
      if (names[i] >= 0x80) {  // the list is UTF-8 (rule R12.4.1): decode only what is not ASCII
        try { decoder.decode(names.subarray(nameStart, nameEnd)); } catch {
          throw new ListError(`ticket ${ticketText(hi, lo)}: the pseudonym is not UTF-8`);
        }
        break;
      }
    }
    // The leaf, in place after the fixed campaign prefix.
    const leaf = this.leaf.bytes, view = this.leaf.view;
    view.setUint32(2, hi);
    view.setUint32(6, lo);
    let at = this.afterCampaign;
    view.setUint16(at, nameLength);
    leaf.set(names.subarray(nameStart, nameEnd), at + 2);
    at += 2 + nameLength;
    const s = this.strata[stratum];
    view.setUint16(at, s.length);
    leaf.set(s, at + 2);
    at += 2 + s.length;
    this.leaf.digestInto(at, this.hashView, 0);
    this.tree.addHash(this.hashOut, 0);

    if (n >= this.hi.data.length) this.grow(n + 1);
    this.hi.data[n] = hi;
    this.lo.data[n] = lo;
    this.stratumOf.data[n] = stratum;
    this.stratumCounts[stratum] += 1;
    if (this.seed) {
      const sv = this.score.view;
      sv.setUint32(49, hi);
      sv.setUint32(53, lo);
      this.score.digestInto(57, this.hashView, 0);
      this.score0.data[n] = this.hashView.getUint32(0);
      this.score1.data[n] = this.hashView.getUint32(4);
    }
    this.count = n + 1;
  }

  grow(size) {
    for (const column of [this.hi, this.lo, this.stratumOf]) column.ensure(size);
    if (this.seed) { this.score0.ensure(size); this.score1.ensure(size); }
  }

  stratumIndex(bytes, start, end) {
    const length = end - start;
    const strata = this.strata;
    const guess = strata[this.lastStratum];
    if (guess && sameBytes(guess, bytes, start, length)) return this.lastStratum;
    for (let i = 0; i < strata.length; i++) {
      if (sameBytes(strata[i], bytes, start, length)) { this.lastStratum = i; return i; }
    }
    return -1;
  }

  // An NDJSON line (rule R12.4.3). The canonical spelling {"pseudonym":"..","stratum":"..","ticket":N}
  // with plain ASCII values becomes its CSV line, read as one; any other spelling goes through
  // JSON.parse and must then be exactly the canonical line of what it holds.
  ndjsonLineOf(bytes, start, end) {
    const fast = this.canonicalNdjson(bytes, start, end);
    if (fast) { this.csvLine(this.ndjsonLine, 0, fast); return; }
    let item;
    const sources = new Map();  // holder object -> the source text of its "ticket" number
    try {
      item = JSON.parse(decoder.decode(bytes.subarray(start, end)), function reviver(key, value, context) {
        if (key === "ticket") sources.set(this, context?.source ?? null);
        return value;
      });
    } catch (error) {
      throw new ListError(`line ${this.count + 1}: malformed NDJSON: ${error.message}`);
    }
    if (item === null || typeof item !== "object" || Array.isArray(item)) {
      throw new ListError(`line ${this.count + 1}: not a JSON object`);
    }
    const { ticket, pseudonym, stratum } = item;
    const ticketSource = sources.get(item) ?? null;
    if (Object.keys(item).length !== 3 || !("ticket" in item) || !("pseudonym" in item) || !("stratum" in item)) {
      throw new ListError(`line ${this.count + 1}: the object must hold exactly ticket, pseudonym and stratum`);
    }
    if (typeof ticket !== "number" || ticketSource === null || !/^(0|[1-9][0-9]{0,19})$/.test(ticketSource)) {
      throw new ListError(`line ${this.count + 1}: ticket ${ticketSource ?? JSON.stringify(ticket)} is not a canonical integer`);
    }
    if (typeof pseudonym !== "string" || typeof stratum !== "string"
        || !pseudonym.isWellFormed() || !stratum.isWellFormed()) {
      throw new ListError(`line ${this.count + 1}: pseudonym and stratum must be strings`);
    }
    // Exactly the canonical line (rule R12.4.3): no other key, no key twice, no other spelling.
    // JSON.stringify escapes a well-formed string exactly as canonical JSON does.
    const canonical = `{"pseudonym":${JSON.stringify(pseudonym)},"stratum":${JSON.stringify(stratum)},"ticket":${ticketSource}}`;
    if (canonical !== decoder.decode(bytes.subarray(start, end))) {
      throw new ListError(`line ${this.count + 1}: not the canonical NDJSON line ${canonical.slice(0, 80)}`);
    }
    const value = BigInt(ticketSource);
    if (value >= 18446744073709551616n) throw new ListError(`line ${this.count + 1}: the ticket does not fit in 64 bits`);
    const name = encoder.encode(pseudonym), group = encoder.encode(stratum);
    this.add(Number(value >> 32n), Number(value & 0xffffffffn), name, 0, name.length, group, 0, group.length);
  }

  // The CSV line of a canonical ASCII NDJSON line, written into this.ndjsonLine; its length, or 0.
  canonicalNdjson(bytes, start, end) {
    if (!startsWith(bytes, start, end, NDJSON_HEAD)) return 0;
    let at = start + NDJSON_HEAD.length;
    const nameStart = at;
    while (at < end && plain(bytes[at])) at++;
    const nameEnd = at;
    if (!startsWith(bytes, at, end, NDJSON_MIDDLE)) return 0;
    at += NDJSON_MIDDLE.length;
    const stratumStart = at;
    while (at < end && plain(bytes[at])) at++;
    const stratumEnd = at;
    if (!startsWith(bytes, at, end, NDJSON_TAIL)) return 0;
    at += NDJSON_TAIL.length;
    const digitsStart = at;
    while (at < end && bytes[at] >= ZERO && bytes[at] <= NINE) at++;
    const digitsEnd = at;
    if (digitsEnd === digitsStart || digitsEnd - digitsStart > 20 || at + 1 !== end || bytes[at] !== 125) return 0;
    if (bytes[digitsStart] === ZERO && digitsEnd - digitsStart > 1) return 0;  // not JSON: let JSON.parse say so
    const total = (digitsEnd - digitsStart) + 1 + (nameEnd - nameStart) + 1 + (stratumEnd - stratumStart);
    if (total > this.ndjsonLine.length) this.ndjsonLine = new Uint8Array(total * 2);
    const out = this.ndjsonLine;
    out.set(bytes.subarray(digitsStart, digitsEnd), 0);
    let o = digitsEnd - digitsStart;
    out[o++] = COMMA;
    out.set(bytes.subarray(nameStart, nameEnd), o);
    o += nameEnd - nameStart;
    out[o++] = COMMA;
    out.set(bytes.subarray(stratumStart, stratumEnd), o);
    return o + (stratumEnd - stratumStart);
  }

  // The arrays the recomputation reads, trimmed to the line count.
  columns() {
    const n = this.count;
    return {
      count: n, hi: this.hi.data.subarray(0, n), lo: this.lo.data.subarray(0, n),
      stratumOf: this.stratumOf.data.subarray(0, n), stratumCounts: Array.from(this.stratumCounts),
      score0: this.seed ? this.score0.data.subarray(0, n) : null,
      score1: this.seed ? this.score1.data.subarray(0, n) : null,
    };
  }
}

// A JSON string byte that needs no unescaping and cannot split the CSV line: printable ASCII but " \ and ,.
const plain = (b) => b >= 0x20 && b < 0x7f && b !== QUOTE && b !== BACKSLASH && b !== COMMA;

function indexOfIn(bytes, value, start, end) {
  const found = bytes.indexOf(value, start);
  return found >= 0 && found < end ? found : -1;
}

function startsWith(bytes, start, end, prefix) {
  if (end - start < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (bytes[start + i] !== prefix[i]) return false;
  return true;
}

function sameBytes(expected, bytes, start, length) {
  if (expected.length !== length) return false;
  for (let i = 0; i < length; i++) if (expected[i] !== bytes[start + i]) return false;
  return true;
}

// Read a fetch Response's body through a ListDigest; onProgress(lines, bytes) now and then.
export async function digestResponse(response, digest, onProgress) {
  const reader = response.body.getReader();
  let last = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    try {
      digest.push(value);
    } catch (error) {
      reader.cancel().catch(() => {});
      throw error;
    }
    const now = performance.now();
    if (now - last > 50) { last = now; onProgress(digest.count, digest.bytes); }
  }
  const root = digest.finish();
  onProgress(digest.count, digest.bytes);
  return root;
}
