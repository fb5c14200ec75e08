// The public campaign page: status, commitment, seed inputs, the draw, downloads, and
// "check my ticket", which re-checks the inclusion proof, the signatures and the score against
// the stratum's cutoff here, in the browser (WebCrypto), so a citizen need not trust the server.
// The bytes are those of docs/draw-spec.md and lottery/verify.py.
"use strict";

const STRINGS = {
  en: {
    loading: "Loading…", status: "Status", state: "State", registrations: "Registrations",
    commitment: "Commitment", not_committed: "The registrant list is not committed yet.",
    seed_inputs: "Seed inputs", not_drawn: "The draw has not run yet.", participant: "Participant",
    commitment_hash: "Commitment SHA-256(secret)", reveal: "Reveal", draw: "Draw", stratum: "Stratum",
    quota: "Quota", registrants: "Registrants", winners: "Winners", cutoff: "Cutoff (score, ticket)",
    downloads: "Downloads", bundle: "Signed proof bundle (JSON)", list_csv: "Registrant list (CSV)",
    list_ndjson: "Registrant list (NDJSON)", offline: "Check everything offline, trusting nobody:",
    check_title: "Check my ticket", check_button: "Check",
    check_help: "Paste your registration receipt (JSON) or type your ticket number. Your browser checks the proof itself; nothing you paste is sent anywhere.",
    opens: "Registration opens", closes: "Registration closes", committed: "List committed",
    drawn: "Draw run", claim: "Claim deadline", spending: "Spending deadline",
    tree_size: "Leaves (registrants)", root: "Root (RFC 6962)", committed_at: "Committed at", key_id: "Key id",
    signature: "Signature", sig_ok: "verified in this browser (Ed25519)", sig_bad: "DOES NOT VERIFY",
    sig_unchecked: "not checked: this browser has no Ed25519 in WebCrypto",
    beacon_kind: "Beacon", beacon_round: "Round", randomness: "Randomness", seed: "Seed",
    revealed: "revealed", missing: "never revealed: the draw went on without it",
    spill: "Spill-over: {unused} unused quota places went to the lowest scores left ({winners} winners); cutoff {cutoff}.",
    no_spill: "No spill-over: every stratum filled its quota.",
    sandbox: "SANDBOX BEACON: a locally signed value, for demos and tests only.",
    enter: "Paste a receipt or type a ticket number.",
    step_input: "Ticket {ticket}", step_receipt_sig: "Receipt signed by the service key {key}",
    step_receipt_leaf: "The receipt's leaf is the committed leaf",
    step_leaf: "Leaf decodes: campaign {campaign}, ticket {ticket}, stratum {stratum}",
    step_commit_sig: "Commitment signed by the service key {key}",
    step_inclusion: "Inclusion proof: leaf {index} of {size} hashes up to the signed root",
    step_score: "Score = SHA-256(\"stimulus/score/v1\" ‖ seed ‖ ticket)",
    step_cutoff_win: "Listed as a winner (tier {tier}, {amount}) and scores within the {which} cutoff",
    step_cutoff_lose: "Not a winner, and scores above stratum {stratum}'s cutoff",
    step_bundle: "Seed, bundle signature and the winners' root: re-derive them offline with stimulus-verify",
    step_other_algorithm: "Algorithm {algorithm}: selection is re-derived offline from the whole list",
    won: "You won: {amount}.", lost: "You did not win this time.", rejected: "REJECTED: {reason}",
    pending: "Registered and included; the draw has not run yet.",
    stratum_cutoff: "stratum", spill_cutoff: "spill-over",
  },
  zh: {
    loading: "加载中…", status: "状态", state: "阶段", registrations: "登记人数",
    commitment: "名单承诺", not_committed: "登记名单尚未承诺。",
    seed_inputs: "随机种子来源", not_drawn: "尚未摇号。", participant: "参与方",
    commitment_hash: "承诺 SHA-256(秘密)", reveal: "揭示", draw: "摇号", stratum: "分组（区）",
    quota: "名额", registrants: "登记人数", winners: "中签人数", cutoff: "分界线（分数，票号）",
    downloads: "下载", bundle: "签名证明包（JSON）", list_csv: "登记名单（CSV）",
    list_ndjson: "登记名单（NDJSON）", offline: "离线核验一切，无需信任任何人：",
    check_title: "核验我的票", check_button: "核验",
    check_help: "粘贴您的登记回执（JSON）或输入票号。由您的浏览器自行核验证明，您粘贴的内容不会发送到任何地方。",
    opens: "开始登记", closes: "截止登记", committed: "名单已承诺", drawn: "已摇号",
    claim: "领取截止", spending: "消费截止",
    tree_size: "叶子数（登记人数）", root: "根（RFC 6962）", committed_at: "承诺时间", key_id: "密钥编号",
    signature: "签名", sig_ok: "已在本浏览器中验证（Ed25519）", sig_bad: "签名无效",
    sig_unchecked: "未核验：此浏览器的 WebCrypto 不支持 Ed25519",
    beacon_kind: "随机信标", beacon_round: "轮次", randomness: "随机数", seed: "种子",
    revealed: "已揭示", missing: "未揭示：摇号在没有它的情况下进行",
    spill: "名额调剂：{unused} 个未用名额给予剩余分数最低者（{winners} 人）；分界线 {cutoff}。",
    no_spill: "无名额调剂：各分组名额均已用满。",
    sandbox: "沙箱信标：本地签名的数值，仅用于演示和测试。",
    enter: "请粘贴回执或输入票号。",
    step_input: "票号 {ticket}", step_receipt_sig: "回执由服务密钥 {key} 签名",
    step_receipt_leaf: "回执中的叶子即为已承诺的叶子",
    step_leaf: "叶子解码：活动 {campaign}，票号 {ticket}，分组 {stratum}",
    step_commit_sig: "名单承诺由服务密钥 {key} 签名",
    step_inclusion: "包含证明：第 {index} 个叶子（共 {size} 个）逐层哈希得到已签名的根",
    step_score: "分数 = SHA-256(\"stimulus/score/v1\" ‖ 种子 ‖ 票号)",
    step_cutoff_win: "列为中签者（{tier} 档，{amount}），分数在{which}分界线之内",
    step_cutoff_lose: "未中签，分数高于分组 {stratum} 的分界线",
    step_bundle: "种子、证明包签名和中签名单根：请用 stimulus-verify 离线重新推导",
    step_other_algorithm: "算法 {algorithm}：需用完整名单离线重新推导",
    won: "恭喜中签：{amount}。", lost: "很遗憾，本次未中签。", rejected: "核验失败：{reason}",
    pending: "已登记并包含在名单中；尚未摇号。",
    stratum_cutoff: "分组", spill_cutoff: "调剂",
  },
};

let lang = (localStorage.getItem("stimulus-lang") || (navigator.language || "en")).startsWith("zh") ? "zh" : "en";
const t = (key, values = {}) =>
  (STRINGS[lang][key] || STRINGS.en[key] || key).replace(/\{(\w+)\}/g, (_, k) => String(values[k] ?? ""));
const $ = (id) => document.getElementById(id);
const campaignId = decodeURIComponent(location.pathname.split("/").filter(Boolean)[1] || "");
const state = { campaign: null, commitment: null, bundle: null, keys: {}, commitmentSig: null };

// -- bytes ---------------------------------------------------------------------------------------

const hexToBytes = (hex) => {
  if (typeof hex !== "string" || hex.length % 2 || /[^0-9a-f]/i.test(hex)) throw new Error(`not hex: ${hex}`);
  return Uint8Array.from(hex.match(/../g) || [], (b) => parseInt(b, 16));
};
const bytesToHex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
const concat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
};
const u64 = (value) => {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(value));
  return out;
};
const sha256 = async (bytes) => new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
const equal = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
const compare = (a, b) => {
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
};
const utf8 = (text) => new TextEncoder().encode(text);
const yuan = (fen) => `¥${(fen / 100).toFixed(2)}`;

// Canonical JSON (sorted keys, no spaces), as lottery/canonical.py writes it for signatures.
const canonical = (value) => {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value && typeof value === "object") {
    return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`).join(",")}}`;
  }
  return JSON.stringify(value);
};

async function ed25519Verify(publicHex, signatureHex, message) {
  try {
    const key = await crypto.subtle.importKey("raw", hexToBytes(publicHex), { name: "Ed25519" }, false, ["verify"]);
    return await crypto.subtle.verify({ name: "Ed25519" }, key, hexToBytes(signatureHex), message);
  } catch (error) {
    if (error && (error.name === "NotSupportedError" || /Unrecognized|not supported/i.test(String(error)))) return null;
    return false;
  }
}

// A version-1 leaf: 0x01, ticket (u64), then campaign id, pseudonym, stratum, each u16-length-prefixed.
function decodeLeaf(leaf) {
  if (leaf.length < 9 || leaf[0] !== 1) throw new Error("not a version-1 leaf");
  const view = new DataView(leaf.buffer, leaf.byteOffset, leaf.byteLength);
  const ticket = view.getBigUint64(1);
  let offset = 9;
  const fields = [];
  for (let i = 0; i < 3; i++) {
    if (offset + 2 > leaf.length) throw new Error("truncated leaf");
    const length = view.getUint16(offset);
    offset += 2;
    if (length === 0 || offset + length > leaf.length) throw new Error("bad field length");
    fields.push(new TextDecoder("utf-8", { fatal: true }).decode(leaf.subarray(offset, offset + length)));
    offset += length;
  }
  if (offset !== leaf.length) throw new Error("trailing bytes");
  return { campaign: fields[0], ticket: Number(ticket), pseudonym: fields[1], stratum: fields[2] };
}

// RFC 9162 section 2.1.3.2: verify an inclusion proof of leaf `index` in a tree of `size`.
async function inclusionRoot(leaf, index, size, path) {
  if (index < 0 || index >= size) return null;
  let fn = index, sn = size - 1;
  let node = await sha256(concat(Uint8Array.of(0), leaf));
  for (const sibling of path) {
    if (sn === 0) return null;
    if ((fn & 1) || fn === sn) {
      node = await sha256(concat(Uint8Array.of(1), sibling, node));
      if (!(fn & 1)) while (!(fn & 1) && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
    } else {
      node = await sha256(concat(Uint8Array.of(1), node, sibling));
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 ? node : null;
}

// -- loading the campaign -----------------------------------------------------------------------

async function getJson(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  if (response.status === 404) return null;
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

function row(dl, label, value) {
  const dt = document.createElement("dt");
  dt.textContent = label;
  const dd = document.createElement("dd");
  dd.textContent = value;
  dl.append(dt, dd);
  return dd;
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  tr.append(td);
}

function render() {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  $("language").textContent = lang === "zh" ? "English" : "中文";
  document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  const c = state.campaign;
  if (!c) return;
  $("campaign-name").textContent = c.name;
  document.title = `${c.name} · stimulus`;
  $("state").textContent = c.state;
  $("registrations").textContent = c.registrations.toLocaleString();
  const when = (iso) => (iso ? new Date(iso).toLocaleString(lang === "zh" ? "zh-CN" : "en-GB") : "—");
  const timeline = [
    ["opens", c.registration_opens_at], ["closes", c.registration_closes_at],
    ["committed", state.commitment && state.commitment.committed_at],
    ["drawn", state.bundle && state.bundle.drawn_at], ["claim", c.claim_deadline], ["spending", c.spending_deadline],
  ];
  $("timeline").replaceChildren(...timeline.map(([key, iso]) => {
    const li = document.createElement("li");
    li.textContent = `${t(key)}: ${when(iso)}`;
    if (iso && new Date(iso) <= new Date()) li.className = "done";
    return li;
  }));
  const dl = $("commitment");
  dl.replaceChildren();
  $("no-commitment").hidden = Boolean(state.commitment);
  if (state.commitment) {
    const m = state.commitment;
    row(dl, t("tree_size"), m.tree_size.toLocaleString());
    row(dl, t("root"), m.root_hex);
    row(dl, t("committed_at"), m.committed_at);
    row(dl, t("key_id"), m.key_id);
    row(dl, t("signature"), state.commitmentSig === null ? t("sig_unchecked")
      : state.commitmentSig ? t("sig_ok") : t("sig_bad")).id = "commitment-signature";
  }
  const b = state.bundle;
  $("no-draw").hidden = Boolean(b);
  $("ceremony").hidden = !b;
  $("strata").hidden = !b;
  const beacon = $("beacon");
  beacon.replaceChildren();
  $("sandbox").hidden = !(b && b.beacon.kind === "sandbox");
  $("sandbox").textContent = t("sandbox");
  if (b) {
    $("ceremony").tBodies[0].replaceChildren(...b.ceremony.map((p) => {
      const tr = document.createElement("tr");
      cell(tr, p.participant_id);
      cell(tr, p.commitment_hex, "hex");
      cell(tr, p.secret_hex ? `${t("revealed")}: ${p.secret_hex}` : t("missing"), "hex");
      return tr;
    }));
    row(beacon, t("beacon_kind"), b.beacon.kind);
    row(beacon, t("beacon_round"), String(b.beacon.round));
    row(beacon, t("randomness"), b.beacon.randomness_hex || "");
    row(beacon, t("seed"), b.draw.seed_hex);
    $("strata").tBodies[0].replaceChildren(...b.draw.strata.map((s) => {
      const tr = document.createElement("tr");
      cell(tr, s.stratum);
      cell(tr, String(s.quota));
      cell(tr, s.registrants.toLocaleString());
      cell(tr, String(s.winners_round1));
      cell(tr, s.cutoff_score_hex ? `${s.cutoff_score_hex}, ${s.cutoff_ticket}` : "—", "hex");
      return tr;
    }));
    const spill = b.draw.spillover;
    $("spillover").textContent = spill && spill.winners
      ? t("spill", { unused: spill.unused_quota, winners: spill.winners,
                     cutoff: `${spill.cutoff_score_hex}, ${spill.cutoff_ticket}` })
      : t("no_spill");
  }
  const base = `/v1/campaigns/${encodeURIComponent(campaignId)}`;
  $("bundle-link").href = `${base}/bundle`;
  $("csv-link").href = `${base}/registrants?format=csv`;
  $("ndjson-link").href = `${base}/registrants?format=ndjson`;
  $("verify-command").textContent =
    `curl -o bundle.json ${location.origin}${base}/bundle\n` +
    `curl -o registrants.csv '${location.origin}${base}/registrants?format=csv'\n` +
    `stimulus-verify bundle.json --registrants registrants.csv`;
}

async function load() {
  state.campaign = await getJson(`/v1/campaigns/${encodeURIComponent(campaignId)}`);
  if (!state.campaign) { $("campaign-name").textContent = `${campaignId}: not found`; return; }
  const [commitment, keys, bundle] = await Promise.all([
    getJson(`/v1/campaigns/${encodeURIComponent(campaignId)}/commitment`), getJson("/v1/keys"),
    getJson(`/v1/campaigns/${encodeURIComponent(campaignId)}/bundle`)]);
  state.commitment = commitment;
  state.keys = keys || {};
  state.bundle = bundle ? bundle.bundle : null;
  if (commitment) state.commitmentSig = await commitmentSignature(commitment);
  render();
  document.body.dataset.loaded = "true";
}

async function commitmentSignature(m) {
  const key = state.keys[m.key_id];
  if (!key) return false;
  const signed = JSON.parse(m.statement);
  if (signed.root_hex !== m.root_hex || signed.tree_size !== m.tree_size || signed.campaign_id !== m.campaign_id) {
    return false;
  }
  return ed25519Verify(key, m.signature_hex, utf8(m.statement));
}

// -- check my ticket ----------------------------------------------------------------------------

class Rejected extends Error {}

async function checkTicket(input) {
  const steps = [];
  const step = (cls, text, detail) => steps.push({ cls, text, detail });
  const fail = (text, detail) => { step("bad", text, detail); throw new Rejected(text); };
  try {
    let receipt = null, ticket;
    const trimmed = input.trim();
    if (trimmed.startsWith("{")) {
      receipt = JSON.parse(trimmed);
      ticket = Number(receipt.ticket);
    } else {
      ticket = Number(trimmed);
    }
    if (!Number.isSafeInteger(ticket) || ticket < 0) return { verdict: t("enter"), cls: "bad", steps };
    step("info", t("step_input", { ticket }));
    const proof = await getJson(`/v1/campaigns/${encodeURIComponent(campaignId)}/tickets/${ticket}/proof`);
    if (!proof) fail(`ticket ${ticket}: no inclusion proof (not registered, or not committed yet)`);
    const m = proof.commitment;
    const sig = await commitmentSignature(m);
    if (sig === false) fail(t("step_commit_sig", { key: m.key_id }), t("sig_bad"));
    step(sig ? "ok" : "info", t("step_commit_sig", { key: m.key_id }), sig ? m.root_hex : t("sig_unchecked"));
    if (proof.root_hex !== m.root_hex || proof.tree_size !== m.tree_size) fail("the proof is for another tree");
    const leaf = hexToBytes(proof.leaf_hex);
    let decoded;
    try { decoded = decodeLeaf(leaf); } catch (error) { fail(`leaf: ${error.message}`); }
    if (decoded.campaign !== campaignId || decoded.ticket !== ticket) fail("the proof's leaf is for another ticket");
    step("ok", t("step_leaf", decoded), proof.leaf_hex);
    if (receipt) {
      const key = state.keys[receipt.key_id];
      const statement = canonical({ campaign_id: receipt.campaign_id, ticket: receipt.ticket, leaf_hex: receipt.leaf_hex,
                                    registered_at: receipt.registered_at, key_id: receipt.key_id });
      const ok = key ? await ed25519Verify(key, receipt.signature_hex, utf8(statement)) : false;
      if (ok === false) fail(t("step_receipt_sig", { key: receipt.key_id }), t("sig_bad"));
      step(ok ? "ok" : "info", t("step_receipt_sig", { key: receipt.key_id }), ok ? receipt.registered_at : t("sig_unchecked"));
      if (receipt.leaf_hex !== proof.leaf_hex || receipt.campaign_id !== campaignId) fail(t("step_receipt_leaf"));
      step("ok", t("step_receipt_leaf"));
    }
    const path = proof.audit_path.map(hexToBytes);
    if (path.some((p) => p.length !== 32)) fail("proof hashes must be 32 bytes");
    const root = await inclusionRoot(leaf, proof.leaf_index, proof.tree_size, path);
    const inclusion = t("step_inclusion", { index: proof.leaf_index, size: proof.tree_size });
    if (!root || !equal(root, hexToBytes(m.root_hex))) fail(inclusion, root ? bytesToHex(root) : "path length");
    step("ok", inclusion, m.root_hex);
    const b = state.bundle;
    if (!b) return { verdict: t("pending"), cls: "lost", steps };
    const draw = b.draw;
    if (draw.algorithm !== "sha256-score-v1") {
      step("info", t("step_other_algorithm", { algorithm: draw.algorithm }));
    }
    const seed = hexToBytes(draw.seed_hex);
    const score = await sha256(concat(utf8("stimulus/score/v1"), seed, u64(ticket)));
    const key = concat(score, u64(ticket));
    step("ok", t("step_score"), bytesToHex(score));
    const won = draw.winners.find((w) => w[0] === ticket);
    const entry = draw.strata.find((s) => s.stratum === decoded.stratum);
    if (!entry) fail(`stratum ${decoded.stratum} is missing from the bundle`);
    const cutoffOf = (e) => (e && e.cutoff_score_hex ? concat(hexToBytes(e.cutoff_score_hex), u64(e.cutoff_ticket)) : null);
    const cutoff = cutoffOf(entry), spill = cutoffOf(draw.spillover);
    let verdict, cls;
    if (draw.algorithm !== "sha256-score-v1") {
      verdict = won ? t("won", { amount: yuan(won[3]) }) : t("lost");
      cls = won ? "won" : "lost";
    } else if (won) {
      const [, stratum, tier, amount, round] = won;
      const limit = round === 1 ? cutoff : spill;
      const text = t("step_cutoff_win", { tier, amount: yuan(amount),
                                          which: t(round === 1 ? "stratum_cutoff" : "spill_cutoff") });
      if (stratum !== decoded.stratum || (limit && compare(key, limit) > 0)) fail(text);
      step("ok", text, limit ? bytesToHex(limit) : "");
      verdict = t("won", { amount: yuan(amount) });
      cls = "won";
    } else {
      const text = t("step_cutoff_lose", { stratum: decoded.stratum });
      if (!cutoff || compare(key, cutoff) <= 0) fail(text, "the score is within the cutoff but the ticket is not listed");
      if (draw.spillover.winners && (!spill || compare(key, spill) <= 0)) fail(text, "within the spill-over cutoff");
      step("ok", text, bytesToHex(cutoff));
      verdict = t("lost");
      cls = "lost";
    }
    step("info", t("step_bundle"));
    return { verdict, cls, steps };
  } catch (error) {
    const reason = error instanceof Rejected ? error.message : String(error.message || error);
    if (!(error instanceof Rejected)) step("bad", reason);
    return { verdict: t("rejected", { reason }), cls: "bad", steps };
  }
}

async function onCheck() {
  $("check-button").disabled = true;
  const result = await checkTicket($("ticket-input").value);
  $("verdict").textContent = result.verdict;
  $("verdict").className = result.cls;
  $("steps").replaceChildren(...result.steps.map((s) => {
    const li = document.createElement("li");
    li.className = s.cls;
    li.textContent = s.text;
    if (s.detail) {
      const detail = document.createElement("span");
      detail.className = "detail";
      detail.textContent = s.detail;
      li.append(detail);
    }
    return li;
  }));
  $("check-button").disabled = false;
  document.body.dataset.checked = result.cls;
}

$("language").addEventListener("click", () => {
  lang = lang === "zh" ? "en" : "zh";
  localStorage.setItem("stimulus-lang", lang);
  render();
});
$("check-button").addEventListener("click", onCheck);
load().catch((error) => { $("campaign-name").textContent = String(error); });
