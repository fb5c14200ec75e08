// The draw's bytes, as docs/draw-spec.md defines them and lottery/verify.py checks them, in the
// browser: hex, canonical JSON, Ed25519 (WebCrypto), the registration leaf, RFC 9162 inclusion
// proofs, the seed and the score. No DOM here: app.js shows what these functions find.

const encoder = new TextEncoder();
export const utf8 = (text) => encoder.encode(text);

export function hexToBytes(hex, size) {
  if (typeof hex !== "string" || hex.length % 2 || /[^0-9a-f]/.test(hex)) {
    throw new Error(`not lower-case hex: ${String(hex).slice(0, 80)}`);
  }
  const bytes = new Uint8Array(hex.length / 2);
  for (let i = 0; i < bytes.length; i++) bytes[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  if (size !== undefined && bytes.length !== size) throw new Error(`expected ${size} bytes, got ${bytes.length}`);
  return bytes;
}

export const bytesToHex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) { out.set(part, at); at += part.length; }
  return out;
}

function fixed(width, value) {
  const number = BigInt(value);
  if (number < 0n || number >= 1n << BigInt(8 * width)) throw new Error(`${value} does not fit in ${width} bytes`);
  const out = new Uint8Array(width);
  let rest = number;
  for (let i = width - 1; i >= 0; i--) { out[i] = Number(rest & 0xffn); rest >>= 8n; }
  return out;
}

export const u8 = (value) => fixed(1, value);
export const u32 = (value) => fixed(4, value);
export const u64 = (value) => fixed(8, value);
const lp = (bytes) => concat(u32(bytes.length), bytes);  // the seed's 4-byte length prefix

export const sha256 = async (bytes) => new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
export const equalBytes = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

// Lexicographic byte order, which is how rank keys compare (docs/draw-spec.md section 9.1).
export function compareBytes(a, b) {
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

// JSON with integers beyond 2^53 kept exact as BigInt (tickets are u64): JSON.parse's source text
// gives the digits; a browser without it refuses such a number rather than round it.
export function parseJson(text) {
  return JSON.parse(text, (key, value, context) => {
    if (typeof value !== "number" || Number.isSafeInteger(value) || !Number.isInteger(value)) return value;
    if (context && typeof context.source === "string" && /^\d+$/.test(context.source)) return BigInt(context.source);
    throw new Error(`the number ${value} is too large for this browser to read exactly`);
  });
}

// Canonical JSON as lottery/canonical.py writes what is signed: keys sorted by code point, no
// spaces, integers only, non-ASCII as raw UTF-8 (JSON.stringify's string escapes are the same).
export function canonicalJson(value) {
  if (value === null || typeof value === "boolean") return String(value);
  if (typeof value === "bigint") return value.toString();
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value)) throw new Error(`not an integer: ${value}`);
    return String(value);
  }
  if (typeof value === "string") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  const keys = Object.keys(value).sort(byCodePoint);
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k])}`).join(",")}}`;
}

export function byCodePoint(a, b) {
  const x = Array.from(a, (c) => c.codePointAt(0)), y = Array.from(b, (c) => c.codePointAt(0));
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}

// The statements of docs/draw-spec.md section 5, rebuilt from their fields.
export const statements = {
  commitment: (c) => canonicalJson({ type: "stimulus/commitment/v1", campaign_id: c.campaign_id,
    tree_size: c.tree_size, root_hex: c.root_hex, committed_at: c.committed_at, key_id: c.key_id }),
  receipt: (r) => canonicalJson({ campaign_id: r.campaign_id, ticket: r.ticket, leaf_hex: r.leaf_hex,
    registered_at: r.registered_at, key_id: r.key_id }),
  ceremonyCommit: (campaignId, e) => canonicalJson({ type: "stimulus/ceremony-commit/v1", campaign_id: campaignId,
    participant_id: e.participant_id, commitment_hex: e.commitment_hex }),
  ceremonyReveal: (campaignId, e, rootHex, treeSize) => canonicalJson({ type: "stimulus/ceremony-reveal/v1",
    campaign_id: campaignId, participant_id: e.participant_id, secret_hex: e.secret_hex, root_hex: rootHex,
    tree_size: treeSize }),
};

// The key id: the first 16 hex digits of SHA-256 of the raw 32-byte public key.
export const keyIdOf = async (publicHex) => bytesToHex(await sha256(hexToBytes(publicHex, 32))).slice(0, 16);

// true or false; null when this browser's WebCrypto has no Ed25519.
export async function ed25519Verify(publicHex, signatureHex, message) {
  let key;
  try {
    key = await crypto.subtle.importKey("raw", hexToBytes(publicHex, 32), { name: "Ed25519" }, false, ["verify"]);
  } catch (error) {
    if (error && error.name === "NotSupportedError") return null;
    return false;
  }
  try {
    return await crypto.subtle.verify({ name: "Ed25519" }, key, hexToBytes(signatureHex, 64), message);
  } catch {
    return false;
  }
}

// A version-1 registration leaf (section 3): 0x01, u64 ticket, then campaign id, pseudonym and
// stratum, each u16-length-prefixed, 1..255 bytes, nothing after.
export function decodeLeaf(leaf) {
  if (leaf.length < 9 || leaf[0] !== 1) throw new Error("not a version-1 leaf");
  const view = new DataView(leaf.buffer, leaf.byteOffset, leaf.byteLength);
  const ticket = view.getBigUint64(1);
  const text = new TextDecoder("utf-8", { fatal: true });
  const fields = [];
  let offset = 9;
  for (let i = 0; i < 3; i++) {
    if (offset + 2 > leaf.length) throw new Error("truncated leaf");
    const length = view.getUint16(offset);
    offset += 2;
    if (length < 1 || length > 255 || offset + length > leaf.length) throw new Error("bad field length");
    fields.push(text.decode(leaf.subarray(offset, offset + length)));
    offset += length;
  }
  if (offset !== leaf.length) throw new Error("trailing bytes after the leaf");
  return { ticket, campaign: fields[0], pseudonym: fields[1], stratum: fields[2] };
}

export const leafHash = (leaf) => sha256(concat(Uint8Array.of(0), leaf));
const nodeHash = (left, right) => sha256(concat(Uint8Array.of(1), left, right));

// RFC 9162 section 2.1.3.2 (docs/draw-spec.md section 4.4). `size` and the root to compare with
// come from the signed commitment. Returns the root the path leads to and each hashing step, or
// the reason it cannot lead anywhere.
export async function walkInclusion(leafHashBytes, index, size, path) {
  let fn = BigInt(index), sn = BigInt(size) - 1n;
  if (fn < 0n || fn > sn) return { error: `index ${index} is outside a tree of ${size}` };
  let node = leafHashBytes;
  const trail = [];
  for (const sibling of path) {
    if (sibling.length !== 32) return { error: "a path hash is not 32 bytes", trail };
    if (sn === 0n) return { error: "the path is longer than this tree needs", trail };
    if ((fn & 1n) === 1n || fn === sn) {
      node = await nodeHash(sibling, node);
      trail.push(`H(0x01 ‖ ${bytesToHex(sibling).slice(0, 12)}… ‖ r) = ${bytesToHex(node)}`);
      if ((fn & 1n) === 0n) while ((fn & 1n) === 0n && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
    } else {
      node = await nodeHash(node, sibling);
      trail.push(`H(0x01 ‖ r ‖ ${bytesToHex(sibling).slice(0, 12)}…) = ${bytesToHex(node)}`);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  if (sn !== 0n) return { error: "the path is shorter than this tree needs", trail };
  return { root: node, trail };
}

// Section 8: every campaign participant, sorted by id, revealed or not; the beacon's randomness is
// the one recomputed from its signature.
export function seedPreimage(campaignId, root, treeSize, participants, beacon, randomness) {
  const parts = [lp(utf8("stimulus/seed/v1")), lp(utf8(campaignId)), root, u64(treeSize), u32(participants.length)];
  for (const p of [...participants].sort((a, b) => byCodePoint(a.id, b.id))) {
    parts.push(lp(utf8(p.id)), u8(p.secret ? 1 : 0), lp(p.secret || new Uint8Array(0)));
  }
  parts.push(lp(utf8(beacon.kind)), u64(beacon.round), lp(randomness));
  return concat(...parts);
}

// Section 9.1: score = SHA-256("stimulus/score/v1" || seed || u64(ticket)), the domain not
// length-prefixed; the rank key appends the ticket, so ties go to the lower ticket.
export async function rankKey(seed, ticket) {
  const score = await sha256(concat(utf8("stimulus/score/v1"), seed, u64(ticket)));
  return { score, key: concat(score, u64(ticket)) };
}

export const cutoffKey = (entry) =>
  (entry && entry.cutoff_score_hex ? concat(hexToBytes(entry.cutoff_score_hex, 32), u64(entry.cutoff_ticket)) : null);
