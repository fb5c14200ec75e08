// The published registrant list, streamed and digested as it arrives (docs/draw-spec.md
// sections 3, 4 and 12.4): each line is parsed from the bytes, checked, turned into its
// registration leaf and hashed into the RFC 6962 root, with no allocation per line. The tickets
// and strata are kept in typed arrays for the recomputation, and, when the seed is known, the
// first 64 bits of every ticket's score (section 9.1), which decide nearly every comparison.
// The rules are lottery/parallel.py's, which `stimulus-verify` applies to a list file.

import { MerkleRoot, Sha256Buffer } from "./hashing.js";

// A broken rule of the list (docs/draw-spec.md section 12.4), named by its number.
export class ListError extends Error {
  constructor(rule, reason) { super(`${rule}: ${reason}`); this.rule = rule; this.reason = reason; }
}

const LAYOUT = "R12.4.1", CSV_LINE = "R12.4.2", NDJSON_LINE = "R12.4.3", ORDER = "R12.4.4", STRATUM = "R12.4.5";
const LEAF_FIELDS = "R3.3";
const CSV_HEADER = "ticket,pseudonym,stratum";
const NEWLINE = 10, COMMA = 44, QUOTE = 34, BACKSLASH = 92, ZERO = 48, NINE = 57, CLOSE = 125;
const SCORE_DOMAIN = new TextEncoder().encode("stimulus/score/v1");
const TWO32 = 4294967296;
const MAX_TICKET = (1n << 64n) - 1n;
const encoder = new TextEncoder();
const latin = new TextDecoder("latin1");
const NDJSON_HEAD = encoder.encode('{"pseudonym":"');
const NDJSON_MIDDLE = encoder.encode('","stratum":"');
const NDJSON_TAIL = encoder.encode('","ticket":');
const shown = (bytes, start, end) => JSON.stringify(latin.decode(bytes.subarray(start, Math.min(end, start + 60))));

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
// expected (the committed tree size: a first guess of the line count).
export class ListDigest {
  constructor({ campaignId, strata, seed, expected }) {
    const campaign = encoder.encode(campaignId);
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
    this.utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
    this.carry = new Uint8Array(1024);
    this.carried = 0;
    this.lastStratum = 0;
  }

  // Feed the next piece of the stream.
  push(chunk) {
    try {
      this.utf8.decode(chunk, { stream: true });
    } catch {
      throw new ListError(LAYOUT, `the list is not UTF-8 near byte ${this.bytes}`);
    }
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

  // The stream ended: every line, the last one too, ends with a newline (R12.4.1).
  finish() {
    try {
      this.utf8.decode();
    } catch {
      throw new ListError(LAYOUT, "the list is not UTF-8 at its end");
    }
    if (this.carried) {
      if (this.format === null && latin.decode(this.carry.subarray(0, this.carried)) !== CSV_HEADER
          && this.carry[0] !== 123) {
        throw new ListError(LAYOUT, "the first line is neither the CSV header nor an NDJSON object");
      }
      throw new ListError(LAYOUT, "the last line does not end with a newline");
    }
    return this.tree.root();
  }

  line(bytes, start, end) {
    if (this.format === null) {
      if (latin.decode(bytes.subarray(start, end)) === CSV_HEADER) { this.format = "csv"; return; }
      if (bytes[start] !== 123) throw new ListError(LAYOUT, "the first line is neither the CSV header nor an NDJSON object");
      this.format = "ndjson";
    }
    if (this.format === "csv") this.csvLine(bytes, start, end);
    else this.ndjsonLine(bytes, start, end);
  }

  // ticket,pseudonym,stratum: exactly three fields, no quoting (R12.4.2).
  csvLine(bytes, start, end) {
    const first = indexOfIn(bytes, COMMA, start, end);
    const second = first < 0 ? -1 : indexOfIn(bytes, COMMA, first + 1, end);
    if (second < 0 || indexOfIn(bytes, COMMA, second + 1, end) >= 0) {
      throw new ListError(CSV_LINE, `line ${shown(bytes, start, end)} does not split into ticket,pseudonym,stratum`);
    }
    const digits = first - start;
    if (digits < 1 || digits > 20 || (bytes[start] === ZERO && digits > 1)) {
      throw new ListError(CSV_LINE, `ticket ${shown(bytes, start, first)} is not a canonical decimal number`);
    }
    this.row(this.ticket(bytes, start, first, CSV_LINE), bytes, first + 1, second, second + 1, end);
  }

  // The ticket's decimal digits as two 32-bit halves (this.ticketHi, the low half returned).
  ticket(bytes, start, end, rule) {
    let hi = 0, lo = 0;
    for (let i = start; i < end; i++) {
      const digit = bytes[i] - ZERO;
      if (digit < 0 || digit > 9) throw new ListError(rule, `ticket ${shown(bytes, start, end)} is not a canonical decimal number`);
      const low = lo * 10 + digit;
      const carry = Math.floor(low / TWO32);
      lo = low - carry * TWO32;
      hi = hi * 10 + carry;
      if (hi >= TWO32) throw new ListError(rule, `ticket ${latin.decode(bytes.subarray(start, end))} does not fit in 64 bits`);
    }
    this.ticketHi = hi;
    return lo;
  }

  // One registration: the order, the stratum, the leaf (R12.4.4, R12.4.5, R3.3), its hash and score.
  row(lo, bytes, nameStart, nameEnd, stratumStart, stratumEnd) {
    const hi = this.ticketHi;
    const n = this.count;
    if (n > 0) {
      const ph = this.hi.data[n - 1], pl = this.lo.data[n - 1];
      if (hi < ph || (hi === ph && lo <= pl)) throw new ListError(ORDER, `ticket ${ticketText(hi, lo)} out of order or repeated`);
    }
    const stratum = this.stratumIndex(bytes, stratumStart, stratumEnd);
    if (stratum < 0) {
      throw new ListError(STRATUM, `ticket ${ticketText(hi, lo)} is in an unknown stratum ${shown(bytes, stratumStart, stratumEnd)}`);
    }
    const nameLength = nameEnd - nameStart;
    if (nameLength < 1 || nameLength > 255) {
      throw new ListError(LEAF_FIELDS, `ticket ${ticketText(hi, lo)}: pseudonym must be 1-255 bytes`);
    }
    // The leaf, in place after the fixed campaign prefix.
    const leaf = this.leaf.bytes, view = this.leaf.view;
    view.setUint32(2, hi);
    view.setUint32(6, lo);
    let at = this.afterCampaign;
    view.setUint16(at, nameLength);
    leaf.set(bytes.subarray(nameStart, nameEnd), at + 2);
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

  // An NDJSON line is exactly the canonical JSON of {pseudonym, stratum, ticket} (R12.4.3). The
  // common case, strings without escapes, is read from the bytes; any other line is parsed and
  // must serialise back to itself.
  ndjsonLine(bytes, start, end) {
    if (startsWith(bytes, start, end, NDJSON_HEAD)) {
      let at = start + NDJSON_HEAD.length;
      const nameStart = at;
      while (at < end && plain(bytes[at])) at++;
      const nameEnd = at;
      if (startsWith(bytes, at, end, NDJSON_MIDDLE)) {
        at += NDJSON_MIDDLE.length;
        const stratumStart = at;
        while (at < end && plain(bytes[at])) at++;
        const stratumEnd = at;
        if (startsWith(bytes, at, end, NDJSON_TAIL)) {
          at += NDJSON_TAIL.length;
          const digitsStart = at;
          while (at < end && bytes[at] >= ZERO && bytes[at] <= NINE) at++;
          const digits = at - digitsStart;
          if (digits >= 1 && digits <= 20 && !(bytes[digitsStart] === ZERO && digits > 1)
              && at + 1 === end && bytes[at] === CLOSE) {
            this.row(this.ticket(bytes, digitsStart, at, NDJSON_LINE), bytes, nameStart, nameEnd, stratumStart, stratumEnd);
            return;
          }
        }
      }
    }
    this.parsedNdjsonLine(bytes, start, end);
  }

  parsedNdjsonLine(bytes, start, end) {
    const text = new TextDecoder().decode(bytes.subarray(start, end));
    const refuse = (why) => { throw new ListError(NDJSON_LINE, `line ${shown(bytes, start, end)} ${why}`); };
    let item, ticketSource = null;
    try {
      item = JSON.parse(text, function reviver(key, value, context) {
        if (key === "ticket") ticketSource = context?.source ?? null;
        return value;
      });
    } catch (error) {
      refuse(`is not a JSON object: ${error.message}`);
    }
    if (item === null || typeof item !== "object" || Array.isArray(item)
        || Object.keys(item).sort().join() !== "pseudonym,stratum,ticket") {
      refuse("must hold exactly pseudonym, stratum and ticket");
    }
    const { pseudonym, stratum } = item;
    // Without JSON.parse's source text (older engines), a canonical line ends with "ticket":N}.
    ticketSource ??= /"ticket":(0|[1-9][0-9]*)\}$/.exec(text)?.[1] ?? null;
    if (typeof item.ticket !== "number" || typeof pseudonym !== "string" || typeof stratum !== "string"
        || ticketSource === null || !/^(0|[1-9][0-9]*)$/.test(ticketSource)) {
      refuse("must have an integer ticket and string pseudonym and stratum");
    }
    if (BigInt(ticketSource) > MAX_TICKET) throw new ListError(NDJSON_LINE, `ticket ${ticketSource} does not fit in 64 bits`);
    if (!pseudonym.isWellFormed() || !stratum.isWellFormed()) refuse("holds a string with no UTF-8 form");
    const canonical = `{"pseudonym":${JSON.stringify(pseudonym)},"stratum":${JSON.stringify(stratum)},"ticket":${ticketSource}}`;
    if (canonical !== text) refuse("is not canonical JSON");
    const name = encoder.encode(pseudonym), group = encoder.encode(stratum);
    const digits = encoder.encode(ticketSource);
    const lo = this.ticket(digits, 0, digits.length, NDJSON_LINE);
    const joined = new Uint8Array(name.length + group.length);
    joined.set(name, 0);
    joined.set(group, name.length);
    this.row(lo, joined, 0, name.length, name.length, joined.length);
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

// A byte of a canonical JSON string that needs no unescaping: not a control character, " or \
// (bytes of UTF-8 sequences included: the stream is checked to be UTF-8 as it arrives).
const plain = (b) => b >= 0x20 && b !== QUOTE && b !== BACKSLASH;

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
