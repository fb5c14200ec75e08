// The draw recomputed from the seed and the digested list, for both algorithms, and laid out as
// the bundle's `draw` object (docs/draw-spec.md sections 9, 10, 11 and 12.2), so that it can be
// compared with the bundle's field by field as lottery/verify.py does. The selection mirrors
// lottery/selection.py and lottery/algorithms.py step for step, spill-over and tiers included.
// Rank keys are compared on the first 64 bits of the score kept while digesting the list; only
// a tie there (about one in 2^64) recomputes the whole score.

import { MerkleRoot, Sha256Buffer } from "./hashing.js";
import { md5 } from "./vendor/noble-hashes-2.4.0/legacy.js";
import { bytesToHex, byCodePoint } from "./draw.js";

const SCORE_DOMAIN = new TextEncoder().encode("stimulus/score/v1");
const encoder = new TextEncoder();
const MAX_SELECTIONS = 1 << 16;  // RFC 3797 writes the selection number in two bytes

export class DrawError extends Error {}

// JSON numbers as parseJson reads them: exact Numbers up to 2^53, BigInt beyond.
const ticketValue = (hi, lo) => (hi < 0x200000 ? hi * 4294967296 + lo : (BigInt(hi) << 32n) | BigInt(lo));

// list: the columns of a ListDigest; campaign: the bundle's campaign section; seed: 32 bytes.
export function recompute(campaign, seed, list) {
  const rules = campaign.draw_rules;
  const quotas = new Map(campaign.strata.map((s) => [s.stratum, s.quota]));
  const order = [...quotas.keys()].sort(byCodePoint);
  const index = new Map(campaign.strata.map((s, i) => [s.stratum, i]));  // the list's stratum numbering
  const members = byStratum(list, campaign.strata.length);
  const context = { campaign, seed, list, quotas, order, index, members, spillover: rules.spillover };
  if (rules.spillover !== "none" && rules.spillover !== "redistribute-lowest-scores") {
    throw new DrawError(`unknown spill-over rule ${JSON.stringify(rules.spillover)}`);
  }
  let outcome;
  if (rules.algorithm === "sha256-score-v1") outcome = selectScores(context);
  else if (rules.algorithm === "rfc3797") outcome = selectRfc3797(context);
  else throw new DrawError(`unknown draw algorithm ${JSON.stringify(rules.algorithm)}`);
  return drawSection(rules.algorithm, seed, outcome, rules.spillover, list);
}

// Each stratum's line numbers, ascending (the list is in ticket order), by counting sort.
function byStratum(list, strata) {
  const starts = new Int32Array(strata + 1);
  for (let i = 0; i < list.count; i++) starts[list.stratumOf[i] + 1] += 1;
  for (let s = 0; s < strata; s++) starts[s + 1] += starts[s];
  const all = new Int32Array(list.count);
  const fill = starts.slice(0, strata);
  for (let i = 0; i < list.count; i++) all[fill[list.stratumOf[i]]++] = i;
  return Array.from({ length: strata }, (_, s) => all.subarray(starts[s], starts[s + 1]));
}

// -- sha256-score-v1 (section 9.2) ------------------------------------------------------------

function scorer(seed, list) {
  const buffer = new Sha256Buffer(57);
  buffer.bytes.set(SCORE_DOMAIN, 0);
  buffer.bytes.set(seed, 17);
  return (i) => {
    buffer.view.setUint32(49, list.hi[i]);
    buffer.view.setUint32(53, list.lo[i]);
    const out = new Uint8Array(32);
    buffer.digestInto(57, new DataView(out.buffer), 0);
    return out;
  };
}

// Rank-key order of two lines: score, then ticket (section 9.1).
function rankOrder(list, fullScore) {
  const s0 = list.score0, s1 = list.score1, hi = list.hi, lo = list.lo;
  return (i, j) => {
    if (s0[i] !== s0[j]) return s0[i] < s0[j] ? -1 : 1;
    if (s1[i] !== s1[j]) return s1[i] < s1[j] ? -1 : 1;
    if (i === j) return 0;
    const a = fullScore(i), b = fullScore(j);
    for (let k = 8; k < 32; k++) if (a[k] !== b[k]) return a[k] - b[k];
    if (hi[i] !== hi[j]) return hi[i] < hi[j] ? -1 : 1;
    return lo[i] < lo[j] ? -1 : lo[i] > lo[j] ? 1 : 0;
  };
}

// The `count` lowest rank keys among `lines`, ascending: a bounded max-heap, so that most lines
// cost one comparison with the heap's top.
function lowest(lines, count, compare) {
  if (count <= 0) return new Int32Array(0);
  const heap = new Int32Array(Math.min(count, lines.length));
  let size = 0;
  const down = (at) => {
    for (;;) {
      const left = 2 * at + 1, right = left + 1;
      let top = at;
      if (left < size && compare(heap[left], heap[top]) > 0) top = left;
      if (right < size && compare(heap[right], heap[top]) > 0) top = right;
      if (top === at) return;
      const t = heap[at]; heap[at] = heap[top]; heap[top] = t;
      at = top;
    }
  };
  for (let n = 0; n < lines.length; n++) {
    const line = lines[n];
    if (size < heap.length) {
      let at = size++;
      heap[at] = line;
      while (at > 0) {
        const parent = (at - 1) >> 1;
        if (compare(heap[parent], heap[at]) >= 0) break;
        const t = heap[at]; heap[at] = heap[parent]; heap[parent] = t;
        at = parent;
      }
    } else if (compare(line, heap[0]) < 0) {
      heap[0] = line;
      down(0);
    }
  }
  return heap.sort(compare);
}

function selectScores({ campaign, seed, list, quotas, order, index, members, spillover }) {
  const fullScore = scorer(seed, list);
  const compare = rankOrder(list, fullScore);
  const registrantsOf = (s) => members[index.get(s)].length;
  let unused = 0;
  for (const [s, q] of quotas) unused += Math.max(0, q - registrantsOf(s));
  const spill = spillover === "redistribute-lowest-scores" ? unused : 0;
  const round1 = [], extra = [], strata = [];
  for (const s of order) {
    const quota = quotas.get(s), registrants = registrantsOf(s);
    // The spill-over winners can only come from each stratum's next `spill` lowest keys.
    const best = Array.from(lowest(members[index.get(s)], quota + spill, compare));
    const chosen = best.slice(0, quota);
    for (const line of chosen) round1.push({ line, stratum: s });
    for (const line of best.slice(quota)) extra.push({ line, stratum: s });
    const cutoff = registrants > quota && chosen.length ? chosen[chosen.length - 1] : null;
    strata.push({ stratum: s, registrants, quota, winnersRound1: chosen.length, cutoff });
  }
  const byKey = (a, b) => compare(a.line, b.line) || byCodePoint(a.stratum, b.stratum);
  const round2 = spill ? extra.sort(byKey).slice(0, spill) : [];
  // Published whenever someone outside round 1 lost the spill-over, so they can check why.
  const outsideRound1 = list.count - round1.length;
  const spillCutoff = round2.length && outsideRound1 > round2.length ? round2[round2.length - 1].line : null;
  const ranked = [...round1.map((w) => ({ ...w, round: 1 })), ...round2.map((w) => ({ ...w, round: 2 }))]
    .sort((a, b) => byKey(a, b) || a.round - b.round);
  return { winners: tiered(campaign.tiers, ranked), strata, unused, spillCutoff, fullScore };
}

// The campaign's tiers, in declared order, take their counts from the head of the rank order.
function tiered(tiers, ranked) {
  const winners = [];
  let position = 0;
  for (const tier of tiers) {
    const count = Number(tier.count);
    for (const w of ranked.slice(position, Math.max(position, position + count))) {
      winners.push({ line: w.line, stratum: w.stratum, tier: tier.tier, amount: tier.amount_fen, round: w.round });
    }
    position += count;
  }
  return winners;
}

// -- rfc3797 (section 10) ---------------------------------------------------------------------

// RFC 3797 section 4: 1-based positions chosen from a pool of `size` in selection order. A
// Fenwick tree over "still in the pool" finds and removes the k-th remaining position.
export function selectPositions(key, size, count) {
  if (size < 0 || count < 0) throw new DrawError(`pool size and count must be non-negative, got ${size}, ${count}`);
  if (count > size) throw new DrawError(`cannot select ${count} from a pool of ${size}`);
  if (count > MAX_SELECTIONS) throw new DrawError(`RFC 3797 numbers at most ${MAX_SELECTIONS} selections, got ${count}`);
  const tree = new Int32Array(size + 1);
  for (let i = 1; i <= size; i++) tree[i] = i & -i;
  let top = 1;
  while (top * 2 <= size) top *= 2;
  const keyBytes = encoder.encode(key);
  const message = new Uint8Array(keyBytes.length + 4);
  message.set(keyBytes, 2);
  const positions = [];
  for (let j = 0; j < count; j++) {
    message[0] = message[message.length - 2] = j >> 8;
    message[1] = message[message.length - 1] = j & 0xff;
    let k = modulo(md5(message), size - j) + 1;
    let position = 0;
    for (let step = size ? top : 0; step; step >>= 1) {
      const next = position + step;
      if (next <= size && tree[next] < k) { position = next; k -= tree[next]; }
    }
    position += 1;
    positions.push(position);
    for (let i = position; i <= size; i += i & -i) tree[i] -= 1;
  }
  return positions;
}

// A 128-bit big-endian value modulo m, 16 bits at a time: exact in doubles while m < 2^37, and
// pools are far smaller; no BigInt per selection.
function modulo(bytes, m) {
  let r = 0;
  for (let i = 0; i < bytes.length; i += 2) r = (r * 65536 + bytes[i] * 256 + bytes[i + 1]) % m;
  return r;
}

function selectRfc3797({ campaign, seed, list, quotas, order, index, members, spillover }) {
  const seedHex = bytesToHex(seed);
  const chosen = new Map();  // line -> { stratum, round, position }
  const strata = [];
  for (const s of order) {
    const pool = members[index.get(s)];
    const quota = quotas.get(s);
    const take = Math.min(quota, pool.length);
    selectPositions(`${seedHex}/stratum:${s}/`, pool.length, take)
      .forEach((p, position) => chosen.set(pool[p - 1], { stratum: s, round: 1, position }));
    strata.push({ stratum: s, registrants: pool.length, quota, winnersRound1: take, cutoff: null });
  }
  let unused = 0;
  for (const s of order) unused += Math.max(0, quotas.get(s) - members[index.get(s)].length);
  if (spillover === "redistribute-lowest-scores" && unused) {
    const rest = new Int32Array(list.count - chosen.size);
    let n = 0;
    for (let line = 0; line < list.count; line++) if (!chosen.has(line)) rest[n++] = line;
    const stratumName = campaign.strata.map((s) => s.stratum);
    selectPositions(`${seedHex}/spillover/`, rest.length, Math.min(unused, rest.length))
      .forEach((p, position) => chosen.set(rest[p - 1],
                                           { stratum: stratumName[list.stratumOf[rest[p - 1]]], round: 2, position }));
  }
  const ranked = [...chosen].map(([line, c]) => ({ line, ...c }))
    .sort((a, b) => a.round - b.round || a.position - b.position || byCodePoint(a.stratum, b.stratum));
  return { winners: tiered(campaign.tiers, ranked), strata, unused, spillCutoff: null, fullScore: null };
}

// -- the draw object (section 12.2) and the winners' root (section 11) -------------------------

function drawSection(algorithm, seed, outcome, spillover, list) {
  const cutoff = (line) => (line === null
    ? { cutoff_score_hex: null, cutoff_ticket: null }
    : { cutoff_score_hex: bytesToHex(outcome.fullScore(line)), cutoff_ticket: ticketValue(list.hi[line], list.lo[line]) });
  // The list is in ticket order, so line order is ticket order.
  const winners = outcome.winners
    .sort((a, b) => a.line - b.line)
    .map((w) => ({ ...w, hi: list.hi[w.line], lo: list.lo[w.line] }));
  return {
    algorithm,
    seed_hex: bytesToHex(seed),
    strata: outcome.strata.map((s) => ({ stratum: s.stratum, registrants: s.registrants, quota: s.quota,
                                         winners_round1: s.winnersRound1, ...cutoff(s.cutoff) })),
    spillover: { rule: spillover, unused_quota: outcome.unused,
                 winners: outcome.winners.filter((w) => w.round === 2).length, ...cutoff(outcome.spillCutoff) },
    winner_count: winners.length,
    winners_root_hex: bytesToHex(winnersRoot(winners)),
    winners: winners.map((w) => [ticketValue(w.hi, w.lo), w.stratum, w.tier, w.amount, w.round]),
  };
}

// The winner leaf: 0x02 || u64 ticket || lp16(stratum) || lp16(tier) || u64 amount_fen.
function winnersRoot(winners) {
  const tree = new MerkleRoot();
  const leaf = new Sha256Buffer(1 + 1 + 8 + 2 + 255 + 2 + 255 + 8);
  const out = new Uint8Array(32), outView = new DataView(out.buffer);
  leaf.bytes[0] = 0;
  leaf.bytes[1] = 2;
  for (const w of winners) {
    const s = encoder.encode(w.stratum), t = encoder.encode(w.tier);
    const view = leaf.view;
    view.setUint32(2, w.hi);
    view.setUint32(6, w.lo);
    let at = 10;
    view.setUint16(at, s.length); leaf.bytes.set(s, at + 2); at += 2 + s.length;
    view.setUint16(at, t.length); leaf.bytes.set(t, at + 2); at += 2 + t.length;
    view.setBigUint64(at, BigInt(w.amount)); at += 8;
    leaf.digestInto(at, outView, 0);
    tree.addHash(out, 0);
  }
  return tree.root();
}

// The first difference between the recomputed value and the bundle's, by path, as
// lottery/verify.py's first_difference words it; null when they are equal, types included.
export function firstDifference(expected, actual, path = "draw") {
  const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
  if (isObject(expected) && isObject(actual)) {
    for (const key of [...new Set([...Object.keys(expected), ...Object.keys(actual)])].sort(byCodePoint)) {
      if (!(key in actual)) return `${path}.${key} is missing`;
      if (!(key in expected)) return `${path}.${key} is not expected`;
      const found = firstDifference(expected[key], actual[key], `${path}.${key}`);
      if (found) return found;
    }
    return null;
  }
  if (Array.isArray(expected) && Array.isArray(actual)) {
    for (let i = 0; i < Math.min(expected.length, actual.length); i++) {
      const found = firstDifference(expected[i], actual[i], `${path}[${i}]`);
      if (found) return found;
    }
    if (expected.length !== actual.length) return `${path} has ${actual.length} entries, expected ${expected.length}`;
    return null;
  }
  const kind = (v) => (v === null ? "null" : Array.isArray(v) ? "array" : typeof v === "bigint" ? "number" : typeof v);
  const same = kind(expected) === kind(actual) && (kind(expected) === "number"
    ? BigInt(expected) === BigInt(actual) : expected === actual);
  return same ? null : `${path}: bundle says ${show(actual)}, recomputed ${show(expected)}`;
}

const show = (v) => (typeof v === "bigint" ? v.toString() : JSON.stringify(v));
