// "Check my ticket", step by step, in the order of stimulus-verify's ticket mode
// (docs/draw-spec.md section 13.2): receipt, commitment, leaf, inclusion, ceremony, beacon, seed,
// score against the cutoffs, and the published result. Each step records what it took in and
// what it found; the first failure ends the check. Text is left to app.js: steps carry i18n keys.

import {
  bytesToHex, compareBytes, cutoffKey, decodeLeaf, ed25519Verify, equalBytes, hexToBytes, keyIdOf, leafHash,
  parseJson, rankKey, seedPreimage, sha256, statements, utf8, walkInclusion,
} from "./draw.js";

class Rejected extends Error {
  constructor(reason) { super(reason[0]); this.reason = reason; }
}

// One step: id, status (ok, bad, info, warn), title [key, params], rows [label key, value] where a
// value is text or [key, params] to translate.
class Steps {
  constructor() { this.list = []; }
  add(id, status, title, rows = []) { const step = { id, status, title, rows }; this.list.push(step); return step; }
  fail(id, title, rows, reason) { this.add(id, "bad", title, rows); throw new Rejected(reason); }
}

export const yuan = (fen) => {
  const n = BigInt(fen);
  return `¥${n / 100n}.${String(n % 100n).padStart(2, "0")}`;
};

export async function fetchJson(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" }, cache: "no-store" });
  const text = await response.text();
  let body = null;
  try { body = text ? parseJson(text) : null; } catch { body = null; }
  return { status: response.status, body };
}

// Signature outcome as a step status: a missing Ed25519 is said, not passed off as checked.
const sigStatus = (ok) => (ok === null ? "info" : ok ? "ok" : "bad");
const sigText = (ok) => (ok === null ? ["o_unchecked"] : ok ? ["o_signed"] : ["x_signature"]);

async function serviceKey(keys, keyId) {
  const publicHex = keys[keyId];
  if (!publicHex) return { error: ["x_key_unknown", { key: keyId }] };
  if ((await keyIdOf(publicHex)) !== keyId) return { error: ["x_key_id"] };
  return { publicHex };
}

// The signed commitment (section 5.1), rebuilt from its fields and checked against the service key.
export async function checkCommitment(keys, c) {
  const statement = statements.commitment(c);
  const rows = [["r_key_id", c.key_id], ["r_statement", statement], ["r_signature", c.signature_hex]];
  const key = await serviceKey(keys, c.key_id);
  if (key.error) return { id: "commitment", status: "bad", title: ["s_commitment"], rows, reason: key.error, ok: false };
  rows.splice(1, 0, ["r_public_key", key.publicHex]);
  const ok = await ed25519Verify(key.publicHex, c.signature_hex, utf8(statement));
  rows.push(["r_outcome", sigText(ok)]);
  return { id: "commitment", status: sigStatus(ok), title: ["s_commitment"], rows, reason: ["x_signature"], ok };
}

// Ceremony, beacon and seed (sections 6-8), from the published draw and the signed commitment.
export async function checkSeed(campaign, keys, commitment, summary) {
  const steps = new Steps();
  const b = summary.bundle;
  try {
    const root = hexToBytes(commitment.root_hex, 32);
    if (b.commitment.root_hex !== commitment.root_hex || b.commitment.tree_size !== commitment.tree_size) {
      steps.fail("seed", ["s_seed"], [["r_signed_root", commitment.root_hex]], ["x_other_commitment"]);
    }
    const published = new Map(campaign.participants.map((p) => [p.id, p.public_key_hex]));
    const entries = new Map(b.ceremony.map((e) => [e.participant_id, e]));
    const declared = b.campaign.participants;
    if (entries.size !== b.ceremony.length || declared.length !== entries.size
        || declared.some((p) => !entries.has(p.id) || published.get(p.id) !== p.public_key_hex)) {
      steps.fail("ceremony", ["s_seed"], [], ["x_participants"]);
    }
    const inputs = [];
    for (const p of declared) {
      const e = entries.get(p.id);
      const rows = [["r_commitment", e.commitment_hex || ["not_committed_yet"]]];
      const title = ["s_ceremony", { id: p.id }];
      let status = "ok";
      if (e.commitment_hex) {
        const ok = await ed25519Verify(p.public_key_hex, e.commit_signature_hex,
                                       utf8(statements.ceremonyCommit(b.campaign.id, e)));
        rows.push(["r_commit_sig", sigText(ok)]);
        if (ok === false) steps.fail("ceremony", title, rows, ["x_signature"]);
        if (ok === null) status = "info";
      }
      if (e.secret_hex) {
        const secret = hexToBytes(e.secret_hex);
        const hashed = bytesToHex(await sha256(secret));
        rows.push(["r_secret", e.secret_hex], ["r_hash_secret", hashed]);
        if (hashed !== e.commitment_hex) steps.fail("ceremony", title, rows, ["x_secret"]);
        const ok = await ed25519Verify(p.public_key_hex, e.reveal_signature_hex, utf8(
          statements.ceremonyReveal(b.campaign.id, e, commitment.root_hex, commitment.tree_size)));
        rows.push(["r_reveal_sig", sigText(ok)]);
        if (ok === false) steps.fail("ceremony", title, rows, ["x_signature"]);
        if (ok === null) status = "info";
        inputs.push({ id: p.id, secret });
      } else {
        rows.push(["r_status", ["missing"]]);
        status = "info";
        inputs.push({ id: p.id, secret: null });
      }
      steps.add("ceremony", status, title, rows);
    }
    const beacon = b.beacon;
    const signature = hexToBytes(beacon.signature_hex);
    const randomness = await sha256(signature);
    const beaconRows = [["r_kind", beacon.kind], ["r_round", String(beacon.round)], ["r_signature", beacon.signature_hex],
                        ["r_randomness_computed", bytesToHex(randomness)], ["r_randomness_published", beacon.randomness_hex]];
    if (bytesToHex(randomness) !== beacon.randomness_hex) steps.fail("beacon", ["s_beacon"], beaconRows, ["x_randomness"]);
    steps.add("beacon", "ok", ["s_beacon"], beaconRows);
    if (beacon.kind === "sandbox") {
      // The sandbox chain's secret key is public: its BLS signature proves nothing about fairness.
      steps.add("beacon-signature", "warn", ["s_beacon_auth"], [["r_status", ["o_sandbox"]]]);
    } else {
      steps.add("beacon-signature", "info", ["s_beacon_auth"], [["r_status", ["o_bls"]]]);
    }
    const preimage = seedPreimage(b.campaign.id, root, commitment.tree_size, inputs, beacon, randomness);
    const seed = await sha256(preimage);
    const seedRows = [["r_preimage", bytesToHex(preimage)], ["r_seed_computed", bytesToHex(seed)],
                      ["r_seed_published", b.draw.seed_hex]];
    if (bytesToHex(seed) !== b.draw.seed_hex) steps.fail("seed", ["s_seed"], seedRows, ["x_seed"]);
    steps.add("seed", "ok", ["s_seed"], seedRows);
    return { ok: true, steps: steps.list, seed };
  } catch (error) {
    const reason = error instanceof Rejected ? error.reason : [String(error.message || error)];
    if (!(error instanceof Rejected)) steps.add("seed", "bad", ["s_seed"], [["r_outcome", reason[0]]]);
    return { ok: false, steps: steps.list, reason };
  }
}

function parseInput(input) {
  const text = input.trim();
  if (/^\d{1,20}$/.test(text)) return { ticket: BigInt(text), receipt: null };
  if (!text.startsWith("{")) return null;
  const receipt = parseJson(text);
  if (receipt === null || typeof receipt !== "object" || !/^\d+$/.test(String(receipt.ticket))) return null;
  return { ticket: BigInt(receipt.ticket), receipt };
}

// ctx: campaignId, campaign, keys, commitment, commitmentStep, summary, seedCheck (from app.js).
export async function checkTicket(ctx, input) {
  const steps = new Steps();
  let parsed;
  try { parsed = parseInput(input); } catch { parsed = null; }
  if (!parsed || parsed.ticket >= 1n << 64n) return { outcome: "invalid", verdict: ["enter"], steps: [] };
  const { ticket, receipt } = parsed;
  const base = `/v1/campaigns/${encodeURIComponent(ctx.campaignId)}`;
  try {
    steps.add("input", "info", ["s_input", { ticket: String(ticket) }],
              [["r_source", [receipt ? "s_input_receipt" : "s_input_typed"]]]);
    if (receipt) await checkReceipt(steps, ctx, receipt);
    const c = ctx.commitment;
    if (!c) return { outcome: "pending", verdict: ["v_not_committed"], steps: steps.list, ticket };
    const { status, title, rows, reason } = ctx.commitmentStep;
    if (status === "bad") steps.fail("commitment", title, rows, reason);
    steps.add("commitment", status, title, rows);

    const proof = await fetchJson(`${base}/tickets/${ticket}/proof`);
    if (proof.status === 404) {
      steps.fail("proof", ["s_proof_tree"], [["r_outcome", proof.body?.detail || "404"]],
                 ["x_not_committed", { ticket: String(ticket) }]);
    }
    if (proof.status !== 200 || !proof.body) throw new Error(`proof: HTTP ${proof.status}`);
    const leaf = await checkProof(steps, ctx, proof.body, ticket, receipt);

    if (!ctx.summary) return { outcome: "pending", verdict: ["v_pending"], steps: steps.list, ticket };
    for (const step of ctx.seedCheck.steps) steps.list.push(step);
    if (!ctx.seedCheck.ok) throw new Rejected(ctx.seedCheck.reason);
    return await checkResult(steps, ctx, ticket, leaf.stratum, base);
  } catch (error) {
    const reason = error instanceof Rejected ? error.reason : [String(error.message || error)];
    if (!(error instanceof Rejected)) steps.add("error", "bad", reason, []);
    return { outcome: "rejected", verdict: ["v_rejected", { reason }], steps: steps.list, ticket };
  }
}

async function checkReceipt(steps, ctx, receipt) {
  const rows = [["r_key_id", String(receipt.key_id)], ["r_registered_at", String(receipt.registered_at)]];
  if (receipt.campaign_id !== ctx.campaignId) {
    steps.fail("receipt", ["s_receipt"], rows, ["x_receipt_campaign", { campaign: String(receipt.campaign_id) }]);
  }
  const key = await serviceKey(ctx.keys, receipt.key_id);
  if (key.error) steps.fail("receipt", ["s_receipt"], rows, key.error);
  const statement = statements.receipt(receipt);
  rows.push(["r_public_key", key.publicHex], ["r_statement", statement], ["r_signature", String(receipt.signature_hex)]);
  const ok = await ed25519Verify(key.publicHex, receipt.signature_hex, utf8(statement));
  rows.push(["r_outcome", sigText(ok)]);
  if (ok === false) steps.fail("receipt", ["s_receipt"], rows, ["x_signature"]);
  steps.add("receipt", sigStatus(ok), ["s_receipt"], rows);
}

async function checkProof(steps, ctx, proof, ticket, receipt) {
  const c = ctx.commitment;
  const treeRows = [["r_proof_size", String(proof.tree_size)], ["r_signed_size", String(c.tree_size)],
                    ["r_proof_root", String(proof.root_hex)], ["r_signed_root", c.root_hex]];
  if (proof.tree_size !== c.tree_size || proof.root_hex !== c.root_hex) {
    steps.fail("proof", ["s_proof_tree"], treeRows, ["x_other_tree"]);
  }
  const embedded = proof.commitment || {};
  if (["campaign_id", "tree_size", "root_hex", "committed_at", "key_id", "signature_hex"]
    .some((k) => embedded[k] !== c[k])) steps.fail("proof", ["s_proof_tree"], treeRows, ["x_other_commitment"]);
  steps.add("proof", "ok", ["s_proof_tree"], treeRows);

  const leafRows = [["r_leaf", String(proof.leaf_hex)]];
  let leafBytes, leaf;
  try {
    leafBytes = hexToBytes(proof.leaf_hex);
    leaf = decodeLeaf(leafBytes);
  } catch (error) {
    steps.fail("leaf", ["s_leaf"], leafRows, [String(error.message)]);
  }
  leafRows.push(["r_campaign", leaf.campaign], ["r_ticket", String(leaf.ticket)], ["r_pseudonym", leaf.pseudonym],
                ["r_stratum", leaf.stratum]);
  if (leaf.campaign !== ctx.campaignId || leaf.ticket !== ticket || BigInt(proof.ticket) !== ticket) {
    steps.fail("leaf", ["s_leaf"], leafRows, ["x_other_ticket", { campaign: leaf.campaign, ticket: String(leaf.ticket) }]);
  }
  steps.add("leaf", "ok", ["s_leaf"], leafRows);
  if (receipt) {
    const rows = [["r_receipt_leaf", String(receipt.leaf_hex)], ["r_leaf", proof.leaf_hex]];
    if (receipt.leaf_hex !== proof.leaf_hex) steps.fail("receipt-leaf", ["s_receipt_leaf"], rows, ["x_receipt_leaf"]);
    steps.add("receipt-leaf", "ok", ["s_receipt_leaf"], rows);
  }
  const hashed = await leafHash(leafBytes);
  steps.add("leaf-hash", "ok", ["s_leaf_hash"], [["r_leaf_hash", bytesToHex(hashed)]]);

  const rows = [["r_index", String(proof.leaf_index)], ["r_size", String(c.tree_size)],
                ["r_path", (proof.audit_path || []).join("\n")]];
  let path;
  try { path = proof.audit_path.map((h) => hexToBytes(h, 32)); } catch (error) {
    steps.fail("inclusion", ["s_inclusion"], rows, [String(error.message)]);
  }
  const walked = await walkInclusion(hashed, proof.leaf_index, c.tree_size, path);
  (walked.trail || []).forEach((line, i) => rows.push([["r_step", { n: i + 1 }], line]));
  if (walked.error) steps.fail("inclusion", ["s_inclusion"], rows, [walked.error]);
  rows.push(["r_computed_root", bytesToHex(walked.root)], ["r_signed_root", c.root_hex]);
  if (!equalBytes(walked.root, hexToBytes(c.root_hex, 32))) steps.fail("inclusion", ["s_inclusion"], rows, ["x_root"]);
  steps.add("inclusion", "ok", ["s_inclusion"], rows);
  return leaf;
}

async function checkResult(steps, ctx, ticket, stratum, base) {
  const draw = ctx.summary.bundle.draw;
  const listed = await fetchJson(`${base}/tickets/${ticket}/result`);
  if (listed.status !== 200 || !listed.body) throw new Error(`result: HTTP ${listed.status}`);
  const r = listed.body;
  const listing = r.won ? ["o_listed_won", { tier: r.tier, amount: yuan(r.amount_fen), round: r.round }] : ["o_listed_lost"];
  const listingRows = [["r_listing", listing]];
  if (r.stratum !== stratum) steps.fail("listing", ["s_listing"], listingRows, ["x_listing"]);
  if (draw.algorithm !== "sha256-score-v1") {
    steps.add("listing", "info", ["s_listing"], [...listingRows, ["r_status", ["o_other_algorithm", { algorithm: draw.algorithm }]]]);
    return { outcome: "unverified", verdict: ["v_unverified", { listing }], steps: steps.list, ticket };
  }
  const seed = ctx.seedCheck.seed;
  const { score, key } = await rankKey(seed, ticket);
  steps.add("score", "ok", ["s_score"], [["r_seed_computed", bytesToHex(seed)], ["r_ticket", String(ticket)],
                                         ["r_score", bytesToHex(score)], ["r_rank_key", bytesToHex(key)]]);
  const entry = draw.strata.find((s) => s.stratum === stratum);
  if (!entry) steps.fail("cutoff", ["s_cutoff"], [], ["x_stratum_missing", { stratum }]);
  const cutoff = cutoffKey(entry), spill = cutoffKey(draw.spillover);
  const rows = [["r_rank_key", bytesToHex(key)], ["r_stratum_cutoff", cutoff ? bytesToHex(cutoff) : ["everyone_won"]]];
  if (draw.spillover.winners) rows.push(["r_spill_cutoff", spill ? bytesToHex(spill) : ["everyone_won"]]);
  // Section 9: round 1 takes each stratum's lowest keys; round 2 the lowest keys left, anywhere.
  let round = null, why;
  if (!cutoff || compareBytes(key, cutoff) <= 0) {
    round = 1; why = cutoff ? "o_won_round1" : "o_everyone_round1";
  } else if (draw.spillover.winners && (!spill || compareBytes(key, spill) <= 0)) {
    round = 2; why = spill ? "o_won_round2" : "o_everyone_round2";
  } else {
    why = draw.spillover.winners ? "o_lost_spill" : "o_lost";
  }
  rows.push(["r_by_rules", [why]]);
  steps.add("cutoff", "ok", ["s_cutoff"], rows);
  if (r.won !== (round !== null) || (r.won && r.round !== round)) {
    steps.fail("listing", ["s_listing"], [...listingRows, ["r_by_rules", [why]]], ["x_listing"]);
  }
  steps.add("listing", "ok", ["s_listing"], listingRows);
  steps.add("offline", "info", ["s_offline"], []);
  return r.won
    ? { outcome: "won", verdict: ["v_won", { amount: yuan(r.amount_fen), tier: r.tier }], steps: steps.list, ticket }
    : { outcome: "lost", verdict: ["v_lost"], steps: steps.list, ticket };
}
