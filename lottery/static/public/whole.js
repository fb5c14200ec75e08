// "Verify the whole draw", run in a Web Worker so the page stays responsive: every rule
// `stimulus-verify BUNDLE --registrants LIST --service-key KEY` checks (docs/draw-spec.md
// section 13.1), in the citizen's browser, from the public API, in the spec's order: envelope,
// shape, campaign, commitment, beacon, ceremony, fallbacks and seed, registrant list, draw. The
// seed is known before the list is read, so each line's score is computed as the line goes by.
// A broken rule is reported by its number, as `FAIL <rule>: <reason>` is by stimulus-verify.
//
// Messages to the page: {type: "step", id, status: "running" | "ok" | "warn" | "bad", detail, ms},
// {type: "progress", lines, bytes, total}, {type: "done", outcome: "pass" | "fail", step, rule,
// reason, ms}. A detail or reason is [i18n key, params]; "x_raw" carries the verifier's own words.

import {
  byCodePoint, bytesToHex, canonicalJson, ed25519Verify, hexToBytes, keyIdOf, parseJson, seedPreimage, sha256,
  statements, u64, utf8,
} from "./draw.js";
import { bls12_381 } from "./vendor/noble-curves-2.4.0/bls12-381.js";
import { ed25519 } from "./vendor/noble-curves-2.4.0/ed25519.js";
import { ListDigest, ListError, digestResponse } from "./registrants.js";
import { DrawError, firstDifference, recompute } from "./recompute.js";
import { Violation, checkBundleShape, checkEnvelopeShape, require, timestampMicros } from "./shape.js";

const FORMAT = "stimulus/draw-bundle/v1";
const SANDBOX_WARNING = "SANDBOX BEACON: a drand-format chain whose secret key is public, so predictable; demos and tests only";
const MAX_SELECTIONS = 1 << 16;  // RFC 3797 numbers its selections in two bytes (R10.2.1)
const DST = "BLS_SIG_BLS12381G1_XMD:SHA-256_SSWU_RO_NUL_";
// docs/draw-spec.md sections 7.1 and 7.3: the pinned chains, quicknet and the (predictable) sandbox chain.
const QUICKNET = {
  chainHash: "52db9ba70e0cc0f6eaf7803dd07447a1f5477735fd3f661792ba94600c84e971",
  publicKey: "83cf0f2896adee7eb8b5f01fcad3912212c437e0073e911fb90022d3e760183c8c4b450b6a0a6c3ac6a5776a2d1064510d1fec758c921cc22b0e17e63aaf4bcb5ed66304de9cf809bd274ca73bab4af5a6e9c76a4bc09e76eae8991ef5ece45a",
  genesis: 1692803367,
  period: 3,
};
const SANDBOX = {
  chainHash: "97b117f34ef1a160537e83bd3a89647c5ea1a1220c60faa0d4b8e0470b79a45b",
  publicKey: "a303ac7370a946c54bc324696e2540acb09c9a05cb39ad655f8f3cfe6a4ce703b5a66d42b437603212767dd6a682e7560eecd6f8b29a62d7385f9db25921e63857509887c99224312fff6c3179df15ca46bc4c7f636dc4afa58984f7e34f90bd",
  genesis: 1600000000,
  period: 1,
};
const chainOf = (kind) => (kind === "sandbox" ? SANDBOX : QUICKNET);  // the shape step admits only these two
// The last round whose time a timestamp can spell (9999-12-31T23:59:59Z).
const maxRound = (chain) => Math.floor((253402300799 - chain.genesis) / chain.period) + 1;

const raw = (text) => ["x_raw", { text }];
const parseTimestamp = (text) => timestampMicros(text);  // the shape step has checked every timestamp
const roundTime = (round, chain = QUICKNET) => (chain.genesis + (Number(round) - 1) * chain.period) * 1e6;
// The first round published strictly after `micros` (R7.3.1), for a sandbox campaign's open round.
const firstRoundAfter = (chain, micros) =>
  BigInt(Math.max(1, Math.floor((Math.floor(micros / 1e6) - chain.genesis) / chain.period) + 2));

function timestampText(micros) {
  const at = new Date(Math.floor(micros / 1000));
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${pad(at.getUTCFullYear(), 4)}-${pad(at.getUTCMonth() + 1)}-${pad(at.getUTCDate())}T${pad(at.getUTCHours())}:`
    + `${pad(at.getUTCMinutes())}:${pad(at.getUTCSeconds())}.${pad(micros % 1e6, 6)}Z`;
}

// Ed25519 (RFC 8032) in WebCrypto when the browser has it, else @noble/curves in its strict
// RFC 8032 mode (zip215: false), so that no signature goes unchecked.
async function ed25519Ok(publicHex, signatureHex, message) {
  const web = await ed25519Verify(publicHex, signatureHex, message);
  if (web !== null) return web;
  try {
    return ed25519.verify(hexToBytes(signatureHex, 64), message, hexToBytes(publicHex, 32), { zip215: false });
  } catch {
    return false;
  }
}

// bls-unchained-g1-rfc9380 (quicknet's scheme, and the sandbox chain's): the signature on G1 over
// SHA-256(u64(round)), checked against the chain's public key.
export async function drandRoundOk(round, signatureHex, publicKey = QUICKNET.publicKey) {
  const r = BigInt(round);
  if (r <= 0n || r >= 1n << 64n) return false;
  let signature;
  try { signature = hexToBytes(signatureHex, 48); } catch { return false; }
  const bls = bls12_381.shortSignatures;
  try {
    const point = bls.Signature.fromBytes(signature);
    if (point.is0() || !point.isTorsionFree()) return false;
    const message = await sha256(u64(r));
    return bls.verify(point, bls.hash(message, DST), hexToBytes(publicKey, 96));
  } catch {
    return false;
  }
}

class Reported extends Error {
  constructor(step, rule, reason) { super(step); this.step = step; this.rule = rule; this.reason = reason; }
}

class Run {
  constructor(post) { this.post = post; }

  // One reported step: its verdict, detail and time; a broken rule ends the run.
  async step(id, work) {
    this.post({ type: "step", id, status: "running" });
    const started = performance.now();
    try {
      const { status = "ok", detail = null, value } = (await work()) || {};
      this.post({ type: "step", id, status, detail, ms: performance.now() - started });
      return value;
    } catch (error) {
      let rule = null, reason;
      if (error instanceof Violation || error instanceof ListError) {
        rule = error.rule;
        reason = raw(`${error.rule}: ${error.reason}`);
      } else if (error instanceof Fetching) {
        reason = error.reason;
      } else {
        reason = raw(`this browser could not finish the check: ${error.message || error}`);
      }
      this.post({ type: "step", id, status: "bad", detail: reason, ms: performance.now() - started });
      throw new Reported(id, rule, reason);
    }
  }
}

class Fetching extends Error {
  constructor(what, status) { super(what); this.reason = ["x_fetch", { what, status }]; }
}

async function fetchOk(path, what) {
  const response = await fetch(path, { cache: "no-store" });
  if (!response.ok) throw new Fetching(what, response.status);
  return response;
}

function sameBytes(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function lastIndexOfBytes(data, pattern) {
  for (let at = data.lastIndexOf(pattern[0]); at >= 0; at = at ? data.lastIndexOf(pattern[0], at - 1) : -1) {
    if (sameBytes(data.subarray(at, at + pattern.length), pattern)) return at;
  }
  return -1;
}

// 1. The envelope: R2.5.1, R12.1.1-R12.1.5, with the key the service publishes at /v1/keys pinned.
async function checkEnvelope(data, keys, keyId) {
  let document;
  try {
    document = parseJson(new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(data));
    require(sameBytes(utf8(canonicalJson(document)), data), "R2.5.1", "the document is not in canonical form");
  } catch (error) {
    throw error instanceof Violation ? error : new Violation("R2.5.1", `bundle file is not canonical JSON: ${error.message}`);
  }
  checkEnvelopeShape(document);
  // The service's key: the one asked for, or the only one published, or the one of that id.
  const published = Object.values(keys);
  const pinned = keyId !== null ? keys[keyId] : published.length === 1 ? published[0] : keys[document.key_id];
  require(document.public_key_hex === pinned, "R12.1.2", "bundle is signed by a key other than the pinned service key");
  require((await keyIdOf(document.public_key_hex)) === document.key_id, "R12.1.3", "key_id does not match the public key");
  // Canonical, so the signed bytes are exactly the text between the envelope's markers (section 5.5).
  const signed = data.subarray('{"bundle":'.length, lastIndexOfBytes(data, utf8(',"key_id":')));
  require(await ed25519Ok(document.public_key_hex, document.signature_hex, signed), "R12.1.4",
          "bundle signature does not verify");
  require(document.bundle.format === FORMAT, "R12.1.5", `not a ${FORMAT} bundle`);
  return { bundle: document.bundle, key: document.public_key_hex, keyId: document.key_id, signedBytes: signed.length };
}

const ascending = (values) => values.every((v, i) => i === 0 || byCodePoint(values[i - 1], v) < 0);
const big = (v) => BigInt(v);

// 3. The campaign's own rules: R12.2.4, R12.2.5, R12.2.6, R9.2.2, R9.2.1, R10.2.1.
function checkCampaign(c) {
  const { strata, tiers } = c;
  require(ascending(strata.map((s) => s.stratum)), "R12.2.4", "campaign.strata not sorted by unique stratum id");
  require(ascending(c.participants.map((p) => p.id)), "R12.2.4", "campaign.participants not sorted by unique id");
  const opens = parseTimestamp(c.registration_opens_at), closes = parseTimestamp(c.registration_closes_at);
  const closed = parseTimestamp(c.registration_closed_at);
  require(opens < closes, "R12.2.5", "registration_opens_at is not before registration_closes_at");
  require(opens <= closed && closed <= closes, "R12.2.5",
          "registration_closed_at lies outside registration_opens_at..registration_closes_at");
  const deadline = c.draw_rules.reveal_deadline;
  require(deadline === null || parseTimestamp(deadline) > closes, "R12.2.5",
          "the reveal deadline is not after registration closes");
  const totalFen = tiers.reduce((sum, t) => sum + big(t.amount_fen) * big(t.count), 0n);
  require(big(c.budget_fen) >= 1n && totalFen <= big(c.budget_fen), "R12.2.6",
          `the tiers need ${totalFen} fen but the budget is ${c.budget_fen}`);
  require(tiers.length >= 1 && new Set(tiers.map((t) => t.tier)).size === tiers.length, "R9.2.2",
          "the tiers must be at least one, with unique names");
  require(tiers.every((t) => big(t.count) >= 1n && big(t.amount_fen) >= 1n), "R9.2.2",
          "every tier needs a count and an amount_fen of at least 1");
  const winners = tiers.reduce((sum, t) => sum + big(t.count), 0n);
  require(strata.length >= 1 && strata.every((s) => big(s.quota) >= 1n), "R9.2.1",
          "there must be at least one stratum, each with a quota of at least 1");
  const quotas = strata.reduce((sum, s) => sum + big(s.quota), 0n);
  require(quotas === winners, "R9.2.1", `the quotas add up to ${quotas} but the tiers to ${winners}`);
  require(c.draw_rules.algorithm !== "rfc3797" || winners <= BigInt(MAX_SELECTIONS), "R10.2.1",
          `rfc3797 selects at most ${MAX_SELECTIONS} winners, the tiers ask for ${winners}`);
}

// 4. The commitment: R5.1.1-R5.1.4.
async function checkCommitment(bundle, key, keyId) {
  const c = bundle.commitment, campaign = bundle.campaign;
  require(c.campaign_id === campaign.id, "R5.1.1", "commitment names another campaign");
  require(c.key_id === keyId, "R5.1.2", "commitment key id is not the service key");
  require(await ed25519Ok(key, c.signature_hex, utf8(statements.commitment(c))), "R5.1.3",
          "commitment signature does not verify");
  require(parseTimestamp(c.committed_at) >= parseTimestamp(campaign.registration_closed_at), "R5.1.4",
          "commitment made before registration closed");
}

function beaconTime(bundle) {
  return roundTime(bundle.beacon.round, chainOf(bundle.beacon.kind));
}

// 5. The beacon: R7.2.1, R7.2.3, R7.2.2, then R7.3.x (sandbox) and R7.1.x (the kind's chain).
async function checkBeacon(bundle) {
  const beacon = bundle.beacon, declared = bundle.campaign.beacon;
  require(beacon.kind === declared.kind, "R7.2.1", "beacon kind differs from the campaign's");
  require(bundle.sandbox === (beacon.kind === "sandbox"), "R7.2.3",
          "bundle.sandbox must be true exactly when the beacon is the sandbox beacon");
  const signature = hexToBytes(beacon.signature_hex);
  const randomness = await sha256(signature);
  require(beacon.randomness_hex === bytesToHex(randomness), "R7.2.2", "beacon randomness is not SHA-256 of its signature");
  const committed = parseTimestamp(bundle.commitment.committed_at);
  const kind = beacon.kind, chain = chainOf(kind), round = big(beacon.round);
  if (kind === "sandbox") {
    if (declared.round === null) {
      // The campaign left the round open: the first one after the commitment, every reveal and (if
      // someone never revealed) the reveal deadline, which nobody chooses.
      const moments = [committed, ...bundle.ceremony.filter((e) => e.revealed_at !== null)
        .map((e) => parseTimestamp(e.revealed_at))];
      const deadline = bundle.campaign.draw_rules.reveal_deadline;
      if (deadline !== null && bundle.ceremony.some((e) => e.revealed_at === null)) moments.push(parseTimestamp(deadline));
      const expected = firstRoundAfter(chain, Math.max(...moments));
      require(round === expected && beacon.path === "first-round-after-reveals", "R7.3.1",
              `sandbox beacon round ${round} on path ${beacon.path} is not the first round after the reveals `
              + `(${expected}, path first-round-after-reveals)`);
    }
    require(beacon.public_key_hex === SANDBOX.publicKey, "R7.3.2", "sandbox beacon's public_key_hex is not the sandbox chain's key");
    require(beacon.warning === SANDBOX_WARNING, "R7.3.3", "sandbox beacon not marked as such");
  }
  const [name, keyName] = kind === "sandbox" ? ["sandbox chain", "the sandbox chain's key"] : ["drand", "the quicknet key"];
  require(beacon.chain_hash === chain.chainHash, "R7.1.1",
          `beacon is not from the ${kind === "sandbox" ? "sandbox" : "drand quicknet"} chain`);
  require(declared.round !== null || kind === "sandbox", "R7.1.2",
          "the campaign declared no beacon round; only a sandbox campaign may leave it open");
  if (declared.round !== null) {
    const wanted = big(declared.round);
    const onTime = round === wanted && beacon.path === "declared-round";
    // Only the very next round: a wider choice would let the operator pick among rounds.
    const fallback = beacon.path === "next-round-fallback" && round === wanted + 1n && declared.fallback === "next-round";
    require(onTime || fallback, "R7.1.2", `beacon round ${round} on path ${beacon.path} is not the declared round `
            + `${wanted} or its declared next-round fallback`);
  }
  require(round >= 1n && round <= BigInt(maxRound(chain)), "R7.1.3", `${name} round ${round} has no publication time`);
  require(beacon.round_time === timestampText(roundTime(round, chain)), "R7.1.3",
          `beacon round_time ${beacon.round_time} is not round ${round}'s time`);
  require(roundTime(round, chain) > committed, "R7.1.4", "beacon round was published before the registrant list was committed");
  require(await drandRoundOk(round, beacon.signature_hex, chain.publicKey), "R7.1.5",
          `${name} round ${round}: BLS signature does not verify against ${keyName}`);
  if (kind === "sandbox") return { status: "warn", detail: ["w_beacon_sandbox", { round: String(round) }], value: randomness };
  return { detail: ["w_beacon_drand", { round: String(round) }], value: randomness };
}

// The reveal deadline in force: the declared one, or the drand round's time if that is earlier.
function revealDeadline(campaign) {
  const deadlines = [];
  if (campaign.draw_rules.reveal_deadline !== null) deadlines.push(parseTimestamp(campaign.draw_rules.reveal_deadline));
  if (campaign.beacon.kind === "drand-quicknet" && campaign.beacon.round !== null) {
    deadlines.push(roundTime(campaign.beacon.round));
  }
  return deadlines.length ? Math.min(...deadlines) : null;
}

// 6. The ceremony (section 6): R6.1, then per entry R6.2-R6.4 and R6.9-R6.10 or R6.5-R6.8.
async function checkCeremony(bundle) {
  const campaign = bundle.campaign, rules = campaign.draw_rules, c = bundle.commitment;
  const participants = new Map(campaign.participants.map((p) => [p.id, p.public_key_hex]));
  const ids = bundle.ceremony.map((e) => e.participant_id);
  const expected = [...participants.keys()].sort(byCodePoint);
  require(ids.length === expected.length && ids.every((id, i) => id === expected[i]), "R6.1",
          "ceremony entries are not the campaign's participants, one each, in participant_id order");
  const closes = parseTimestamp(campaign.registration_closed_at);
  const committed = parseTimestamp(c.committed_at);
  const beaconAt = beaconTime(bundle);
  const deadline = revealDeadline(campaign);
  const reveals = [];
  let missing = 0;
  for (const entry of bundle.ceremony) {
    const pid = entry.participant_id, key = participants.get(pid);
    const commitNull = ["commitment_hex", "commit_signature_hex", "committed_at"].map((k) => entry[k] === null);
    const revealNull = ["secret_hex", "reveal_signature_hex", "revealed_at"].map((k) => entry[k] === null);
    require(new Set(commitNull).size === 1 && new Set(revealNull).size === 1, "R6.2",
            `participant ${pid}: commitment or reveal fields only partly present`);
    const revealed = !revealNull[0];
    require(entry.status === (revealed ? "revealed" : "missing"), "R6.2",
            `participant ${pid}: status ${entry.status} does not match the secret`);
    require(!revealed || !commitNull[0], "R6.2", `participant ${pid}: revealed without a commitment`);
    if (entry.commitment_hex !== null) {
      require(await ed25519Ok(key, entry.commit_signature_hex, utf8(statements.ceremonyCommit(campaign.id, entry))),
              "R6.3", `participant ${pid}: commitment signature does not verify`);
      require(parseTimestamp(entry.committed_at) < closes, "R6.4", `participant ${pid}: committed after registration closed`);
    }
    if (!revealed) {
      require(rules.missing_reveal === "proceed-without", "R6.9",
              `participant ${pid} never revealed and the campaign's rule is ${rules.missing_reveal}`);
      require(deadline !== null, "R6.10", `participant ${pid} never revealed and no deadline was set`);
      require(deadline <= beaconAt, "R6.10", `participant ${pid}: beacon used before the reveal deadline`);
      reveals.push({ id: pid, secret: null });
      missing += 1;
      continue;
    }
    const secret = hexToBytes(entry.secret_hex);
    require(bytesToHex(await sha256(secret)) === entry.commitment_hex, "R6.5",
            `participant ${pid}: secret does not match the commitment`);
    require(await ed25519Ok(key, entry.reveal_signature_hex,
                            utf8(statements.ceremonyReveal(campaign.id, entry, c.root_hex, c.tree_size))),
            "R6.6", `participant ${pid}: reveal signature does not verify`);
    const revealedAt = parseTimestamp(entry.revealed_at);
    require(committed <= revealedAt && revealedAt < beaconAt, "R6.7",
            `participant ${pid}: revealed outside the window between commitment and beacon`);
    require(deadline === null || revealedAt < deadline, "R6.8", `participant ${pid}: revealed after the reveal deadline`);
    reveals.push({ id: pid, secret });
  }
  return {
    detail: ["w_ceremony_ok", { all: participants.size, revealed: participants.size - missing, missing }],
    value: reveals,
  };
}

// 7. and 8. The fallbacks taken, exactly (R12.2.7), and the seed (R8.1).
async function checkSeed(bundle, reveals, randomness) {
  const expected = bundle.ceremony.filter((e) => e.secret_hex === null).map((e) =>
    `participant ${e.participant_id} did not reveal: drawn without their secret (rule proceed-without)`);
  if (bundle.beacon.path === "next-round-fallback") {
    expected.push(`drand round ${bundle.campaign.beacon.round} unavailable: used round ${bundle.beacon.round} (rule next-round)`);
  }
  const taken = bundle.fallbacks_taken;
  require(taken.length === expected.length && taken.every((f, i) => f === expected[i]), "R12.2.7",
          `fallbacks_taken is ${JSON.stringify(taken)}, the evidence says ${JSON.stringify(expected)}`);
  const c = bundle.commitment;
  const seed = await sha256(seedPreimage(bundle.campaign.id, hexToBytes(c.root_hex, 32), c.tree_size, reveals,
                                         bundle.beacon, randomness));
  require(bundle.draw.seed_hex === bytesToHex(seed), "R8.1",
          `seed: bundle says ${bundle.draw.seed_hex}, recomputed ${bytesToHex(seed)}`);
  return { detail: ["w_seed_ok", { seed: bytesToHex(seed) }], value: seed };
}

// base: the campaign's public API path; keys: where the service publishes its keys (key id ->
// public key hex); keyId: which of them to pin (by default the one the bundle names); format:
// the list spelling to fetch ("csv" or "ndjson").
async function verify({ base, keys: keysPath = "/v1/keys", keyId = null, format }, post) {
  const run = new Run(post);
  const [keys, data] = await run.step("fetch", async () => {
    const [keysResponse, bundleResponse] = await Promise.all([fetchOk(keysPath, "/v1/keys"),
                                                               fetchOk(`${base}/bundle`, "bundle")]);
    const bytes = new Uint8Array(await bundleResponse.arrayBuffer());
    return { value: [await keysResponse.json(), bytes], detail: ["w_fetched", { bytes: bytes.length.toLocaleString("en") }] };
  });
  const { bundle, key, keyId: bundleKeyId } = await run.step("envelope", async () => {
    const opened = await checkEnvelope(data, keys, keyId);
    return { value: opened, detail: ["w_envelope_ok", { key: opened.keyId, bytes: opened.signedBytes.toLocaleString("en") }] };
  });
  await run.step("shape", async () => {
    checkBundleShape(bundle);
    return { detail: ["w_shape_ok"] };
  });
  await run.step("campaign", async () => {
    checkCampaign(bundle.campaign);
    return { detail: ["w_campaign_ok", { strata: String(bundle.campaign.strata.length),
                                         tiers: String(bundle.campaign.tiers.length) }] };
  });
  const commitment = bundle.commitment;
  await run.step("commitment", async () => {
    await checkCommitment(bundle, key, bundleKeyId);
    return { detail: ["w_commitment_ok", { size: String(commitment.tree_size), root: commitment.root_hex,
                                           at: commitment.committed_at }] };
  });
  const randomness = await run.step("beacon", () => checkBeacon(bundle));
  const reveals = await run.step("ceremony", () => checkCeremony(bundle));
  const seed = await run.step("seed", () => checkSeed(bundle, reveals, randomness));
  const rules = bundle.campaign.draw_rules;

  const list = await run.step("list", async () => {
    const digest = new ListDigest({
      campaignId: bundle.campaign.id, strata: bundle.campaign.strata.map((s) => s.stratum),
      seed: rules.algorithm === "sha256-score-v1" ? seed : null, expected: Number(commitment.tree_size),
    });
    const response = await fetchOk(`${base}/registrants?format=${format}`, "registrants");
    const total = Number(commitment.tree_size);
    const root = await digestResponse(response, digest,
                                      (lines, bytes) => post({ type: "progress", lines, bytes, total }));
    require(BigInt(digest.count) === BigInt(commitment.tree_size), "R12.4.6",
            `registrant list has ${digest.count} registrants, the commitment ${commitment.tree_size}`);
    require(bytesToHex(root) === commitment.root_hex, "R12.4.7",
            `registrant list root ${bytesToHex(root)} differs from the committed root`);
    return { value: digest.columns(),
             detail: ["w_list_ok", { count: digest.count.toLocaleString("en"), bytes: digest.bytes.toLocaleString("en"),
                                     format: digest.format || format }] };
  });

  await run.step("draw", async () => {
    let expected;
    try {
      expected = recompute(bundle.campaign, seed, list);
    } catch (error) {
      throw error instanceof DrawError ? new Violation("R12.2.8", error.message) : error;
    }
    const difference = firstDifference(expected, bundle.draw);
    require(difference === null, "R12.2.8", difference);
    return { detail: ["w_draw_ok", { winners: String(expected.winner_count), strata: String(expected.strata.length),
                                     algorithm: expected.algorithm, root: expected.winners_root_hex }] };
  });
}

self.onmessage = async (event) => {
  const started = performance.now();
  const post = (message) => self.postMessage(message);
  try {
    await verify(event.data, post);
    post({ type: "done", outcome: "pass", ms: performance.now() - started });
  } catch (error) {
    const reported = error instanceof Reported;
    post({ type: "done", outcome: "fail", step: reported ? error.step : "error", rule: reported ? error.rule : null,
           reason: reported ? error.reason : raw(String(error.message || error)), ms: performance.now() - started });
  }
};
