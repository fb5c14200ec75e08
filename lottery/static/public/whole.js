// "Verify the whole draw", run in a Web Worker so the page stays responsive: everything
// `stimulus-verify BUNDLE --registrants LIST --service-key KEY` checks (docs/draw-spec.md
// section 13.1), in the citizen's browser, from the public API. The steps are the spec's, in its
// order: envelope, commitment, registrant list, ceremony, beacon, seed, draw. The ceremony, beacon
// and seed need only the bundle, so they are computed before the list is streamed (the seed lets
// each line's score be computed as the line goes by), but they are reported after the list, in
// the spec's order, so the first discrepancy named is the one stimulus-verify names.
//
// Messages to the page: {type: "step", id, status: "running" | "ok" | "warn" | "bad", detail, ms},
// {type: "progress", lines, bytes, total}, {type: "done", outcome: "pass" | "fail", step, reason, ms}.
// A detail or reason is [i18n key, params]; "x_raw" carries the verifier's own English words.

import {
  byCodePoint, bytesToHex, canonicalJson, ed25519Verify, hexToBytes, keyIdOf, parseJson, seedPreimage, sha256,
  statements, u64, utf8,
} from "./draw.js";
import { bls12_381 } from "./vendor/noble-curves-2.4.0/bls12-381.js";
import { ed25519 } from "./vendor/noble-curves-2.4.0/ed25519.js";
import { ListDigest, ListError, digestResponse } from "./registrants.js";
import { DrawError, firstDifference, recompute } from "./recompute.js";

const FORMAT = "stimulus/draw-bundle/v1";
const SANDBOX_WARNING = "SANDBOX BEACON: a locally signed value, predictable by its key holder; demos and tests only";
// docs/draw-spec.md section 7.1: the pinned quicknet constants.
const QUICKNET = {
  chainHash: "52db9ba70e0cc0f6eaf7803dd07447a1f5477735fd3f661792ba94600c84e971",
  publicKey: "83cf0f2896adee7eb8b5f01fcad3912212c437e0073e911fb90022d3e760183c8c4b450b6a0a6c3ac6a5776a2d1064510d1fec758c921cc22b0e17e63aaf4bcb5ed66304de9cf809bd274ca73bab4af5a6e9c76a4bc09e76eae8991ef5ece45a",
  genesis: 1692803367,
  period: 3,
  dst: "BLS_SIG_BLS12381G1_XMD:SHA-256_SSWU_RO_NUL_",
};

class Failure extends Error {
  constructor(reason) { super(Array.isArray(reason) ? reason[0] : String(reason)); this.reason = reason; }
}
const raw = (text) => ["x_raw", { text }];
function require(condition, reason) { if (!condition) throw new Failure(typeof reason === "string" ? raw(reason) : reason); }

// Timestamps are YYYY-MM-DDTHH:MM:SS.ffffffZ exactly (section 2.4); as microseconds since 1970.
export function parseTimestamp(text) {
  const m = typeof text === "string" && /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})\.(\d{6})Z$/.exec(text);
  if (!m) throw new Failure(raw(`timestamp ${JSON.stringify(text)} is not canonical`));
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number);
  const ms = Date.UTC(year, month - 1, day, hour, minute, second);
  const back = new Date(ms);
  if (year < 1 || back.getUTCFullYear() !== year || back.getUTCMonth() !== month - 1 || back.getUTCDate() !== day
      || hour > 23 || minute > 59 || second > 59) {
    throw new Failure(raw(`timestamp ${JSON.stringify(text)} is not canonical`));
  }
  return ms * 1000 + Number(m[7]);
}

const roundTime = (round) => (QUICKNET.genesis + (Number(round) - 1) * QUICKNET.period) * 1e6;

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

// drand quicknet, bls-unchained-g1-rfc9380: the signature on G1 over SHA-256(u64(round)).
export async function drandRoundOk(round, signatureHex) {
  const r = BigInt(round);
  if (r <= 0n || r >= 1n << 64n) return false;
  let signature;
  try { signature = hexToBytes(signatureHex, 48); } catch { return false; }
  const bls = bls12_381.shortSignatures;
  try {
    const point = bls.Signature.fromBytes(signature);
    if (point.is0() || !point.isTorsionFree()) return false;
    const message = await sha256(u64(r));
    return bls.verify(point, bls.hash(message, QUICKNET.dst), hexToBytes(QUICKNET.publicKey, 96));
  } catch {
    return false;
  }
}

class Run {
  constructor(post) { this.post = post; this.started = performance.now(); }

  // One reported step: its verdict, detail and time (`ms` when it ran earlier, see quietly).
  async step(id, work, ms) {
    this.post({ type: "step", id, status: "running" });
    const started = performance.now();
    const took = () => ms ?? performance.now() - started;
    try {
      const { status = "ok", detail = null, value } = (await work()) || {};
      this.post({ type: "step", id, status, detail, ms: took() });
      return value;
    } catch (error) {
      const reason = error instanceof Failure ? error.reason
        : raw(error instanceof ListError ? `registrant list: ${error.message}` : `malformed input: ${error.message || error}`);
      this.post({ type: "step", id, status: "bad", detail: reason, ms: took() });
      throw new Reported(id, reason);
    }
  }

  // A step computed now and reported later: its outcome, kept with the time it took.
  async quietly(work) {
    const started = performance.now();
    try {
      const result = (await work()) || {};
      return { ...result, ms: performance.now() - started };
    } catch (error) {
      return { error, ms: performance.now() - started };
    }
  }

  report(id, outcome) {
    return this.step(id, async () => {
      if (outcome.error) throw outcome.error;
      return outcome;
    }, outcome.ms);
  }
}

class Reported extends Error {
  constructor(step, reason) { super(step); this.step = step; this.reason = reason; }
}

async function fetchOk(path, what) {
  const response = await fetch(path, { cache: "no-store" });
  if (!response.ok) throw new Failure(["x_fetch", { what, status: response.status }]);
  return response;
}

// 1. The envelope (section 13.1 step 1), with the key the service publishes at /v1/keys pinned.
async function checkEnvelope(data, keys) {
  let text, document;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(data);
    document = parseJson(text);
  } catch (error) {
    throw new Failure(raw(`bundle file is not canonical JSON: ${error.message}`));
  }
  let again;
  try { again = utf8(canonicalJson(document)); } catch (error) { throw new Failure(raw(`bundle file is not canonical JSON: ${error.message}`)); }
  require(sameBytes(again, data), "bundle file is not canonical JSON: the document is not in canonical form");
  require(document && typeof document === "object" && !Array.isArray(document)
          && Object.keys(document).sort().join() === "bundle,key_id,public_key_hex,signature_hex",
          "bundle file must hold exactly bundle, signature_hex, key_id, public_key_hex");
  const pinned = keys[document.key_id];
  require(typeof pinned === "string", ["x_key_unknown", { key: String(document.key_id) }]);
  require(document.public_key_hex === pinned, "bundle is signed by a key other than the pinned service key");
  require((await keyIdOf(document.public_key_hex)) === document.key_id, "key_id does not match the public key");
  // Canonical, so the signed bytes are exactly the text between the envelope's markers (section 5.5).
  const signed = data.subarray('{"bundle":'.length, lastIndexOfBytes(data, utf8(',"key_id":')));
  require(await ed25519Ok(document.public_key_hex, document.signature_hex, signed), "bundle signature does not verify");
  const bundle = document.bundle;
  require(bundle && typeof bundle === "object" && bundle.format === FORMAT, `not a ${FORMAT} bundle`);
  return { bundle, key: document.public_key_hex, keyId: document.key_id, signedBytes: signed.length };
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

// 2. The commitment (step 2).
async function checkCommitment(bundle, key, keyId) {
  const c = bundle.commitment, campaign = bundle.campaign;
  require(c.campaign_id === campaign.id, "commitment names another campaign");
  require(c.key_id === keyId, "commitment key id is not the service key");
  const statement = statements.commitment({ ...c, campaign_id: campaign.id });
  require(await ed25519Ok(key, c.signature_hex, utf8(statement)), "commitment signature does not verify");
  require(closedAt(campaign) <= parseTimestamp(c.committed_at), "commitment made before registration closed");
  return { tree_size: c.tree_size, root_hex: c.root_hex };
}

function closedAt(campaign) {
  const declared = parseTimestamp(campaign.registration_closes_at);
  const actual = parseTimestamp(campaign.registration_closed_at);
  require(actual <= declared, "registration_closed_at lies after the declared close");
  return actual;
}

function beaconTime(bundle) {
  const beacon = bundle.beacon;
  return beacon.kind === "drand-quicknet" ? roundTime(beacon.round) : parseTimestamp(beacon.generated_at);
}

// 4. The ceremony (step 4, section 6): the seed's reveal inputs.
async function checkCeremony(bundle) {
  const campaign = bundle.campaign, rules = campaign.draw_rules, c = bundle.commitment;
  const participants = new Map(campaign.participants.map((p) => [p.id, p.public_key_hex]));
  const entries = new Map(bundle.ceremony.map((e) => [e.participant_id, e]));
  require(entries.size === participants.size && entries.size === bundle.ceremony.length
          && [...entries.keys()].every((id) => participants.has(id)),
          "ceremony entries do not match the campaign's participants");
  const closes = closedAt(campaign);
  const committed = parseTimestamp(c.committed_at);
  const beaconAt = beaconTime(bundle);
  const reveals = [];
  let missing = 0;
  for (const pid of [...participants.keys()].sort(byCodePoint)) {
    const entry = entries.get(pid), key = participants.get(pid);
    if (entry.commitment_hex !== null) {
      require(await ed25519Ok(key, entry.commit_signature_hex,
                              utf8(statements.ceremonyCommit(campaign.id, entry))),
              `participant ${pid}: commitment signature does not verify`);
      require(parseTimestamp(entry.committed_at) < closes, `participant ${pid}: committed after registration closed`);
    }
    if (entry.secret_hex === null) {
      require(entry.status === "missing", `participant ${pid}: no secret but status ${entry.status}`);
      require(rules.missing_reveal === "proceed-without",
              `participant ${pid} never revealed and the campaign's rule is ${rules.missing_reveal}`);
      let deadline;
      if (rules.reveal_deadline === null && bundle.beacon.kind === "drand-quicknet") deadline = beaconAt;
      else {
        require(rules.reveal_deadline !== null, `participant ${pid} never revealed and no deadline was set`);
        deadline = parseTimestamp(rules.reveal_deadline);
      }
      require(deadline <= beaconAt, `participant ${pid}: beacon used before the reveal deadline`);
      require(bundle.fallbacks_taken.some((f) => f.startsWith(`participant ${pid} did not reveal`)),
              `participant ${pid} never revealed but the bundle does not declare the fallback`);
      reveals.push({ id: pid, secret: null });
      missing += 1;
      continue;
    }
    require(entry.status === "revealed", `participant ${pid}: secret present but status ${entry.status}`);
    require(entry.commitment_hex !== null, `participant ${pid}: revealed without a commitment`);
    const secret = hexToBytes(entry.secret_hex);
    require(bytesToHex(await sha256(secret)) === entry.commitment_hex, `participant ${pid}: secret does not match the commitment`);
    require(await ed25519Ok(key, entry.reveal_signature_hex,
                            utf8(statements.ceremonyReveal(campaign.id, entry, c.root_hex, c.tree_size))),
            `participant ${pid}: reveal signature does not verify`);
    const revealed = parseTimestamp(entry.revealed_at);
    require(committed <= revealed && revealed < beaconAt,
            `participant ${pid}: revealed outside the window between commitment and beacon`);
    require(rules.reveal_deadline === null || revealed < parseTimestamp(rules.reveal_deadline),
            `participant ${pid}: revealed after the reveal deadline`);
    reveals.push({ id: pid, secret });
  }
  return {
    detail: ["w_ceremony_ok", { all: participants.size, revealed: participants.size - missing, missing }],
    value: reveals,
  };
}

// 5. The beacon (step 5, section 7): its randomness, recomputed from the signature.
async function checkBeacon(bundle, key) {
  const beacon = bundle.beacon, declared = bundle.campaign.beacon;
  require(beacon.kind === declared.kind, "beacon kind differs from the campaign's");
  const signature = hexToBytes(beacon.signature_hex);
  const randomness = await sha256(signature);
  require(beacon.randomness_hex === bytesToHex(randomness), "beacon randomness is not SHA-256 of its signature");
  const committed = parseTimestamp(bundle.commitment.committed_at);
  if (beacon.kind === "drand-quicknet") {
    require(beacon.chain_hash === QUICKNET.chainHash, "beacon is not from the drand quicknet chain");
    if (beacon.round !== declared.round) {
      // Only the very next round: a wider choice would let the operator pick among rounds.
      require(beacon.path === "next-round-fallback" && BigInt(beacon.round) === BigInt(declared.round) + 1n
              && declared.fallback === "next-round"
              && bundle.fallbacks_taken.some((f) => f.startsWith(`drand round ${declared.round} unavailable`)),
              `beacon round ${beacon.round} is not the declared round ${declared.round}`);
    }
    require(roundTime(beacon.round) > committed, "beacon round was published before the registrant list was committed");
    require(await drandRoundOk(beacon.round, beacon.signature_hex),
            `drand round ${beacon.round}: BLS signature does not verify against the quicknet key`);
    return { detail: ["w_beacon_drand", { round: String(beacon.round) }], value: randomness };
  }
  require(beacon.kind === "sandbox", `unknown beacon kind ${JSON.stringify(beacon.kind)}`);
  require(beacon.round === declared.round, "sandbox beacon round differs from the declared one");
  require(beacon.public_key_hex === key, "sandbox beacon not signed by the service");
  const statement = statements.sandboxBeacon(bundle.campaign.id, beacon.round, bundle.commitment.root_hex);
  require(await ed25519Ok(key, beacon.signature_hex, utf8(statement)), "sandbox beacon signature does not verify");
  require(parseTimestamp(beacon.generated_at) > committed, "sandbox beacon made before the commitment");
  require(beacon.warning === SANDBOX_WARNING && bundle.sandbox === true, "sandbox beacon not marked as such");
  return { status: "warn", detail: ["w_beacon_sandbox"], value: randomness };
}

// 6. The seed (step 6, section 8).
async function checkSeed(bundle, reveals, randomness) {
  const c = bundle.commitment;
  const seed = await sha256(seedPreimage(bundle.campaign.id, hexToBytes(c.root_hex, 32), c.tree_size, reveals,
                                         bundle.beacon, randomness));
  require(bundle.draw.seed_hex === bytesToHex(seed),
          `seed: bundle says ${bundle.draw.seed_hex}, recomputed ${bytesToHex(seed)}`);
  return { detail: ["w_seed_ok", { seed: bytesToHex(seed) }], value: seed };
}

// base: the campaign's public API path; keys: where the service publishes its keys; format: the
// list spelling to fetch ("csv" or "ndjson").
async function verify({ base, keys: keysPath = "/v1/keys", format }, post) {
  const run = new Run(post);
  const [keys, data] = await run.step("fetch", async () => {
    const [keysResponse, bundleResponse] = await Promise.all([fetchOk(keysPath, "/v1/keys"),
                                                               fetchOk(`${base}/bundle`, "bundle")]);
    const bytes = new Uint8Array(await bundleResponse.arrayBuffer());
    return { value: [await keysResponse.json(), bytes], detail: ["w_fetched", { bytes: bytes.length.toLocaleString("en") }] };
  });
  const envelope = await run.step("envelope", async () => {
    const opened = await checkEnvelope(data, keys);
    return { value: opened, detail: ["w_envelope_ok", { key: opened.keyId, bytes: opened.signedBytes.toLocaleString("en") }] };
  });
  const { bundle, key, keyId } = envelope;
  const commitment = await run.step("commitment", async () => {
    const c = await checkCommitment(bundle, key, keyId);
    return { value: c, detail: ["w_commitment_ok", { size: String(c.tree_size), root: c.root_hex, at: bundle.commitment.committed_at }] };
  });

  // Needed before the list goes by, reported after it.
  const ceremony = await run.quietly(() => checkCeremony(bundle));
  const beacon = ceremony.error ? null : await run.quietly(() => checkBeacon(bundle, key));
  const seed = beacon && !beacon.error ? await run.quietly(() => checkSeed(bundle, ceremony.value, beacon.value)) : null;
  const seedBytes = seed && !seed.error ? seed.value : null;
  const rules = bundle.campaign.draw_rules;

  const list = await run.step("list", async () => {
    const digest = new ListDigest({
      campaignId: bundle.campaign.id, strata: bundle.campaign.strata.map((s) => s.stratum),
      seed: rules.algorithm === "sha256-score-v1" ? seedBytes : null, expected: Number(commitment.tree_size),
    });
    const response = await fetchOk(`${base}/registrants?format=${format}`, "registrants");
    const total = Number(commitment.tree_size);
    const root = await digestResponse(response, digest,
                                      (lines, bytes) => post({ type: "progress", lines, bytes, total }));
    require(BigInt(digest.count) === BigInt(commitment.tree_size),
            ["x_list_count", { count: String(digest.count), size: String(commitment.tree_size) }]);
    require(bytesToHex(root) === commitment.root_hex, ["x_list_root", { root: bytesToHex(root) }]);
    return { value: digest.columns(),
             detail: ["w_list_ok", { count: digest.count.toLocaleString("en"), bytes: digest.bytes.toLocaleString("en"),
                                     format: digest.format || format }] };
  });

  await run.report("ceremony", ceremony);
  await run.report("beacon", beacon);
  await run.report("seed", seed);
  await run.step("draw", async () => {
    let expected;
    try {
      expected = recompute(bundle.campaign, seedBytes, list);
    } catch (error) {
      throw new Failure(raw(error instanceof DrawError ? `malformed input: ValueError: ${error.message}` : String(error.message)));
    }
    const difference = firstDifference(expected, bundle.draw);
    require(difference === null, raw(difference));
    return { detail: ["w_draw_ok", { winners: String(expected.winner_count), strata: String(expected.strata.length),
                                     algorithm: expected.algorithm, root: expected.winners_root_hex }] };
  });
  return run;
}

self.onmessage = async (event) => {
  const started = performance.now();
  const post = (message) => self.postMessage(message);
  try {
    await verify(event.data, post);
    post({ type: "done", outcome: "pass", ms: performance.now() - started });
  } catch (error) {
    const step = error instanceof Reported ? error.step : "error";
    const reason = error instanceof Reported ? error.reason : raw(String(error.message || error));
    post({ type: "done", outcome: "fail", step, reason, ms: performance.now() - started });
  }
};
