// The shape of a proof bundle (docs/draw-spec.md section 12.2, rules R12.2.1-R12.2.3 with R2.1.1,
// R2.3.1, R2.4.1, R3.1 and R3.2), checked before anything is read, as lottery/bundle_shape.py
// checks it: the same table of keys and types, walked in the same order (keys sorted; missing
// keys, then extra keys, then each value), so that the first broken rule is the one
// stimulus-verify names. Values come from parseJson: integers are Numbers, or BigInts past 2^53.

import { byCodePoint } from "./draw.js";

export class Violation extends Error {
  constructor(rule, reason) { super(`${rule}: ${reason}`); this.rule = rule; this.reason = reason; }
}
export function require(condition, rule, reason) { if (!condition) throw new Violation(rule, reason); }

const KEYS = "R12.2.1", TYPES = "R12.2.2", VALUES = "R12.2.3", INTEGER_RANGE = "R2.1.1", HEX = "R2.3.1";
const TIMESTAMP = "R2.4.1", CAMPAIGN_ID = "R3.1", LABEL = "R3.2", ENVELOPE = "R12.1.1";
const U64_MAX = (1n << 64n) - 1n;
const CAMPAIGN_ID_PATTERN = /^[a-z0-9][a-z0-9-]{2,39}$/;
const LABEL_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;

export const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
export const isInteger = (v) => typeof v === "bigint" || (typeof v === "number" && Number.isInteger(v));
const repr = (v) => (typeof v === "string" ? `'${v}'` : typeof v === "bigint" ? v.toString() : JSON.stringify(v));

function typeName(v) {
  if (v === null) return "null";
  if (typeof v === "boolean") return "a boolean";
  if (isInteger(v)) return "an integer";
  if (typeof v === "string") return "a string";
  if (Array.isArray(v)) return "an array";
  return isObject(v) ? "an object" : typeof v;
}

// Timestamps are YYYY-MM-DDTHH:MM:SS.ffffffZ exactly (section 2.4); as microseconds since 1970, or
// null when the text is not one.
export function timestampMicros(text) {
  const m = typeof text === "string" && /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})\.(\d{6})Z$/.exec(text);
  if (!m) return null;
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number);
  if (year < 1 || month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 || second > 59) return null;
  const at = new Date(0);
  at.setUTCFullYear(year, month - 1, day);  // Date.UTC would read years below 100 as 19xx
  at.setUTCHours(hour, minute, second, 0);
  if (at.getUTCFullYear() !== year || at.getUTCMonth() !== month - 1 || at.getUTCDate() !== day) return null;
  return at.getTime() * 1000 + Number(m[7]);
}

export function obj(fields, { rule = KEYS, exact = true } = {}) {
  const names = Object.keys(fields).sort(byCodePoint);
  return (value, path) => {
    if (!isObject(value)) throw new Violation(rule === KEYS ? TYPES : rule, `${path} must be an object, not ${typeName(value)}`);
    const missing = names.filter((k) => !Object.hasOwn(value, k));
    if (missing.length) throw new Violation(rule, `${path} lacks the key '${missing[0]}'`);
    const extra = Object.keys(value).filter((k) => !Object.hasOwn(fields, k)).sort(byCodePoint);
    if (exact && extra.length) throw new Violation(rule, `${path} has the unexpected key '${extra[0]}'`);
    for (const key of names) fields[key](value[key], `${path}.${key}`);
  };
}

const array = (item) => (value, path) => {
  if (!Array.isArray(value)) throw new Violation(TYPES, `${path} must be an array, not ${typeName(value)}`);
  value.forEach((entry, i) => item(entry, `${path}[${i}]`));
};

const row = (...items) => (value, path) => {
  if (!Array.isArray(value) || value.length !== items.length) {
    throw new Violation(TYPES, `${path} must be an array of ${items.length} entries`);
  }
  value.forEach((entry, i) => items[i](entry, `${path}[${i}]`));
};

const nullable = (inner) => (value, path) => { if (value !== null) inner(value, path); };

function string(value, path) {
  if (typeof value !== "string") throw new Violation(TYPES, `${path} must be a string, not ${typeName(value)}`);
}

function boolean(value, path) {
  if (typeof value !== "boolean") throw new Violation(TYPES, `${path} must be true or false, not ${typeName(value)}`);
}

export function u64(value, path) {
  if (!isInteger(value)) throw new Violation(TYPES, `${path} must be an integer, not ${typeName(value)}`);
  const n = BigInt(value);
  if (n < 0n || n > U64_MAX) throw new Violation(INTEGER_RANGE, `${path} = ${n} lies outside 0..2^64-1`);
}

export function hexBytes(low, high = low) {
  return (value, path) => {
    string(value, path);
    const size = value.length / 2;
    if (value.length % 2 || size < low || size > high || /[^0-9a-f]/.test(value)) {
      throw new Violation(HEX, `${path} must be ${high === low ? low : `${low}..${high}`} bytes in lower-case hex`);
    }
  };
}

function timestamp(value, path) {
  string(value, path);
  if (timestampMicros(value) === null) {
    throw new Violation(TIMESTAMP, `${path} = ${repr(value)} is not a YYYY-MM-DDTHH:MM:SS.ffffffZ timestamp`);
  }
}

const oneOf = (...values) => (value, path) => {
  string(value, path);
  if (!values.includes(value)) throw new Violation(VALUES, `${path} = ${repr(value)} is not one of ${values.join(", ")}`);
};

const matching = (pattern, rule) => (value, path) => {
  string(value, path);
  if (!pattern.test(value)) throw new Violation(rule, `${path} = ${repr(value)} does not match ${pattern.source}`);
};

const HASH = hexBytes(32), SIGNATURE = hexBytes(64), KEY_ID = hexBytes(8);

const CAMPAIGN = obj({
  id: matching(CAMPAIGN_ID_PATTERN, CAMPAIGN_ID),
  name: string,
  budget_fen: u64,
  tiers: array(obj({ tier: matching(LABEL_PATTERN, LABEL), amount_fen: u64, count: u64 })),
  strata: array(obj({ stratum: matching(LABEL_PATTERN, LABEL), quota: u64 })),
  registration_opens_at: timestamp,
  registration_closes_at: timestamp,
  registration_closed_at: timestamp,
  beacon: obj({ kind: oneOf("drand-quicknet", "sandbox"), round: nullable(u64), fallback: oneOf("next-round", "none") }),
  participants: array(obj({ id: string, name: string, public_key_hex: hexBytes(32) })),
  draw_rules: obj({ algorithm: oneOf("sha256-score-v1", "rfc3797"), tier_scope: oneOf("global"),
                    spillover: oneOf("redistribute-lowest-scores", "none"),
                    missing_reveal: oneOf("proceed-without", "abort"), reveal_deadline: nullable(timestamp) }),
});

const COMMITMENT = obj({ campaign_id: string, tree_size: u64, root_hex: HASH, committed_at: timestamp,
                         key_id: KEY_ID, signature_hex: SIGNATURE });

const CEREMONY_ENTRY = obj({
  participant_id: string,
  commitment_hex: nullable(HASH),
  commit_signature_hex: nullable(SIGNATURE),
  committed_at: nullable(timestamp),
  secret_hex: nullable(hexBytes(16, 64)),
  reveal_signature_hex: nullable(SIGNATURE),
  revealed_at: nullable(timestamp),
  status: oneOf("revealed", "missing"),
});

const DRAND_FIELDS = { kind: string, chain_hash: HASH, round: u64, signature_hex: hexBytes(48), randomness_hex: HASH,
                       round_time: timestamp };
const DRAND_BEACON = obj({ ...DRAND_FIELDS, path: oneOf("declared-round", "next-round-fallback") });
// The sandbox chain's round, marked: its public key (G2, 96 bytes) and the warning.
const SANDBOX_BEACON = obj({ ...DRAND_FIELDS, path: oneOf("declared-round", "next-round-fallback", "first-round-after-reveals"),
                             public_key_hex: hexBytes(96), warning: string });

function beacon(value, path) {
  if (!isObject(value)) throw new Violation(TYPES, `${path} must be an object, not ${typeName(value)}`);
  if (!Object.hasOwn(value, "kind")) throw new Violation(KEYS, `${path} lacks the key 'kind'`);
  oneOf("drand-quicknet", "sandbox")(value.kind, `${path}.kind`);
  (value.kind === "drand-quicknet" ? DRAND_BEACON : SANDBOX_BEACON)(value, path);
}

const CUTOFF = { cutoff_score_hex: nullable(HASH), cutoff_ticket: nullable(u64) };
const DRAW = obj({
  algorithm: string,
  seed_hex: HASH,
  strata: array(obj({ stratum: string, registrants: u64, quota: u64, winners_round1: u64, ...CUTOFF })),
  spillover: obj({ rule: string, unused_quota: u64, winners: u64, ...CUTOFF }),
  winner_count: u64,
  winners_root_hex: HASH,
  winners: array(row(u64, string, string, u64, u64)),
});

const BUNDLE = obj({
  format: string,
  software: obj({ name: oneOf("stimulus"), version: string }),
  sandbox: boolean,
  campaign: CAMPAIGN,
  commitment: COMMITMENT,
  ceremony: array(CEREMONY_ENTRY),
  beacon,
  draw: DRAW,
  drawn_at: timestamp,
  fallbacks_taken: array(string),
});

function anyObject(value, path) {
  if (!isObject(value)) throw new Violation(ENVELOPE, `${path} must be an object, not ${typeName(value)}`);
}

const envelopeString = (inner) => (value, path) => {
  if (typeof value !== "string") throw new Violation(ENVELOPE, `${path} must be a string, not ${typeName(value)}`);
  inner(value, path);
};

export const checkEnvelopeShape = (document) => obj({
  bundle: anyObject, key_id: envelopeString(KEY_ID), public_key_hex: envelopeString(hexBytes(32)),
  signature_hex: envelopeString(SIGNATURE),
}, { rule: ENVELOPE })(document, "envelope");

export const checkBundleShape = (bundle) => BUNDLE(bundle, "bundle");
