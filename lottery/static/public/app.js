// The public campaign page: status and timeline, the signed commitment, the seed's inputs, the
// result by stratum, downloads, "check my ticket" (check.js), which verifies a citizen's ticket
// here, in the browser, so that nobody has to take the server's word for it, and "verify the whole
// draw", which runs every check of stimulus-verify in a Web Worker (whole.js).

import { checkCommitment, checkSeed, checkTicket, fetchJson, yuan } from "./check.js";
import { STRINGS } from "./i18n.js";

const $ = (id) => document.getElementById(id);
const campaignId = decodeURIComponent(location.pathname.split("/").filter(Boolean)[1] || "");
const base = `/v1/campaigns/${encodeURIComponent(campaignId)}`;
const ctx = { campaignId, campaign: null, keys: {}, commitment: null, commitmentStep: null, ceremony: null,
              beacon: null, summary: null, seedCheck: null };
let lang = localStorage.getItem("stimulus-lang")
  || ((navigator.language || "en").toLowerCase().startsWith("zh") ? "zh" : "en");
let lastCheck = null;
// The whole-draw check: each step's latest message, the progress, and the outcome.
const WHOLE_STEPS = ["fetch", "envelope", "shape", "campaign", "commitment", "beacon", "ceremony", "seed", "list",
                     "draw"];
const whole = { steps: new Map(), progress: null, done: null, worker: null };

// A text: a key with values, where a value may itself be [key, values] to translate.
function t(key, values = {}) {
  const text = key.split(".").reduce((o, k) => (o ? o[k] : undefined), STRINGS[lang])
    ?? key.split(".").reduce((o, k) => (o ? o[k] : undefined), STRINGS.en) ?? key;
  return String(text).replace(/\{(\w+)\}/g, (_, k) => {
    const value = values[k];
    return Array.isArray(value) ? t(value[0], value[1]) : String(value ?? "");
  });
}
const tr = (value) => (Array.isArray(value) ? t(value[0], value[1]) : String(value));

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

const dl = (pairs) => el("dl", {}, ...pairs.flatMap(([label, value, attrs]) => [
  el("dt", { text: label }), el("dd", { text: value, ...(attrs || {}) })]));
const when = (iso) => (iso ? new Date(iso).toLocaleString(lang === "zh" ? "zh-CN" : "en-GB",
                                                          { dateStyle: "medium", timeStyle: "short" }) : t("pending_time"));

function renderStatus() {
  const c = ctx.campaign;
  $("campaign-name").textContent = c.name;
  document.title = `${c.name} · ${c.id}`;
  const sandbox = c.beacon.kind === "sandbox";
  $("sandbox").hidden = !sandbox;
  $("status-facts").replaceChildren(dl([
    [t("state"), t(`states.${c.state}`), { id: "state", "data-state": c.state }],
    [t("registrations"), c.registrations.toLocaleString(), { id: "registrations" }],
    [t("budget"), yuan(c.budget_fen)],
    [t("prizes"), c.tiers.map((x) => t("prize", { count: x.count.toLocaleString(), amount: yuan(x.amount_fen),
                                                  tier: x.tier })).join(" · ")],
  ]));
}

function renderTimeline() {
  const c = ctx.campaign, b = ctx.summary?.bundle, beacon = b?.beacon || ctx.beacon;
  const committedCount = (ctx.ceremony?.participants || []).filter((p) => p.commitment_hex).length;
  const lastCommit = (ctx.ceremony?.participants || []).map((p) => p.committed_at).filter(Boolean).sort().pop();
  const reveal = c.draw_rules.reveal_deadline || ctx.ceremony?.reveal_deadline;
  const events = [
    ["opens", t("tl_opens"), c.registration_opens_at],
    c.participants.length ? ["ceremony", t("tl_ceremony", { done: committedCount, all: c.participants.length }),
                             lastCommit] : null,
    ["closes", t("tl_closes"), c.registration_closes_at],
    b ? ["closed", t("tl_closed"), b.campaign.registration_closed_at] : null,  // the bundle records it
    ["committed", t("tl_committed"), ctx.commitment?.committed_at],
    reveal ? ["reveal", t("tl_reveal"), reveal] : null,
    ["beacon", t("tl_beacon", { kind: c.beacon.kind, round: beacon?.round ?? c.beacon.round ?? "—" }),
     beacon?.round_time || beacon?.generated_at],
    ["drawn", t("tl_drawn"), b?.drawn_at],
    ["claim", t("tl_claim"), c.claim_deadline],
    ["spending", t("tl_spending"), c.spending_deadline],
  ].filter(Boolean);
  const now = new Date();
  $("timeline").replaceChildren(...events.map(([id, label, iso]) => el("li", {
    "data-event": id, class: iso && new Date(iso) <= now ? "done" : "",
  }, el("span", { class: "when", text: when(iso) }), el("span", { text: label }))));
}

function renderCommitment() {
  const m = ctx.commitment;
  $("no-commitment").hidden = Boolean(m);
  if (!m) { $("commitment").replaceChildren(); return; }
  const step = ctx.commitmentStep;
  const sig = step.status === "ok" ? t("sig_ok") : step.status === "bad" ? t("sig_bad") : t("sig_unchecked");
  $("commitment").replaceChildren(dl([
    [t("tree_size"), m.tree_size.toLocaleString(), { id: "tree-size" }],
    [t("root"), m.root_hex, { id: "root" }],
    [t("committed_at"), m.committed_at],
    [t("key_id"), m.key_id, { id: "key-id" }],
    [t("public_key"), ctx.keys[m.key_id] || "—"],
    [t("signature"), `${sig} · ${m.signature_hex}`, { id: "commitment-signature", "data-status": step.status }],
  ]));
}

function renderSeed() {
  const b = ctx.summary?.bundle;
  $("no-draw").hidden = Boolean(b);
  const entries = b ? b.ceremony : (ctx.ceremony?.participants || []).map((p) => ({ ...p, status: null }));
  $("ceremony").hidden = entries.length === 0;
  $("ceremony").tBodies[0].replaceChildren(...entries.map((p) => el("tr", {},
    el("td", { text: p.participant_id }),
    el("td", { class: "hex", text: p.commitment_hex || t("not_committed_yet") }),
    el("td", { class: "hex", text: p.secret_hex || (p.status === "missing" ? t("missing") : t("not_revealed")) }))));
  const beacon = b?.beacon || ctx.beacon;
  const pairs = [];
  if (beacon) {
    pairs.push([t("beacon"), beacon.kind], [t("beacon_round"), String(beacon.round)],
               [t("beacon_signature"), beacon.signature_hex], [t("randomness"), beacon.randomness_hex]);
  }
  if (b) {
    const check = ctx.seedCheck;
    pairs.push([t("seed"), b.draw.seed_hex, { id: "seed" }],
               [t("seed_check"), check.ok ? `✓ ${t("o_ok")}` : `✗ ${tr(check.reason)}`,
                { id: "seed-check", "data-status": check.ok ? "ok" : "bad" }]);
  }
  $("beacon").replaceChildren(dl(pairs));
}

function renderDraw() {
  const b = ctx.summary?.bundle;
  $("draw-section").hidden = !b;
  if (!b) return;
  const d = b.draw, names = new Map(ctx.campaign.strata.map((s) => [s.stratum, s.name]));
  $("draw-facts").replaceChildren(dl([
    [t("winners_total"), d.winner_count.toLocaleString(), { id: "winner-count" }],
    [t("algorithm"), d.algorithm], [t("winners_root"), d.winners_root_hex],
  ]));
  $("strata").tBodies[0].replaceChildren(...d.strata.map((s) => el("tr", { "data-stratum": s.stratum },
    el("td", { text: names.get(s.stratum) ? `${s.stratum} ${names.get(s.stratum)}` : s.stratum }),
    el("td", { text: s.quota.toLocaleString() }), el("td", { text: s.registrants.toLocaleString() }),
    el("td", { text: s.winners_round1.toLocaleString() }),
    el("td", { class: "hex", text: s.cutoff_score_hex ? `${s.cutoff_score_hex}, ${s.cutoff_ticket}` : t("everyone_won") }))));
  const spill = d.spillover;
  $("spillover").textContent = spill.winners
    ? t("spill", { unused: spill.unused_quota, winners: spill.winners,
                   cutoff: spill.cutoff_score_hex ? `${spill.cutoff_score_hex}, ${spill.cutoff_ticket}` : "—" })
    : t("spill_none");
}

function renderDownloads() {
  const origin = location.origin, s = ctx.summary;
  $("bundle-item").hidden = !s;
  $("bundle-link").href = `${base}/bundle`;
  $("bundle-meta").textContent = s ? t("bundle_meta", { bytes: s.bundle_bytes.toLocaleString(), sha: s.bundle_sha256_hex }) : "";
  $("list-items").hidden = !ctx.commitment;
  $("offline").hidden = !s;
  $("csv-link").href = `${base}/registrants?format=csv`;
  $("ndjson-link").href = `${base}/registrants?format=ndjson`;
  const key = ctx.commitment ? ctx.keys[ctx.commitment.key_id] : Object.values(ctx.keys)[0];
  const pin = key ? ` --service-key ${key}` : "";
  $("verify-command").textContent = [
    `curl -o bundle.json ${origin}${base}/bundle`,
    `curl -o registrants.csv '${origin}${base}/registrants?format=csv'`,
    `stimulus-verify bundle.json --registrants registrants.csv${pin}`].join("\n");
  $("verify-ticket-command").textContent = [
    `curl -o proof.json ${origin}${base}/tickets/TICKET/proof`,
    `stimulus-verify bundle.json --proof proof.json --receipt receipt.json${pin}`].join("\n");
}

function renderCheck() {
  const r = lastCheck;
  $("verdict").textContent = r ? t(r.verdict[0], r.verdict[1]) : "";
  $("verdict").className = r ? r.outcome : "";
  $("verdict").dataset.outcome = r ? r.outcome : "";
  $("proof-link").hidden = !(r && r.ticket !== undefined && ctx.commitment);
  if (r && r.ticket !== undefined) $("proof-link").href = `${base}/tickets/${r.ticket}/proof`;
  $("steps").replaceChildren(...(r ? r.steps : []).map((s) => el("li", { class: s.status, "data-step": s.id },
    el("span", { class: "title", text: t(s.title[0], s.title[1]) }),
    s.rows.length ? dl(s.rows.map(([label, value]) => [Array.isArray(label) ? tr(label) : t(label), tr(value)]))
      : null)));
}

const seconds = (ms) => (ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`);

function renderWhole() {
  $("whole").hidden = !ctx.summary;
  const running = whole.worker !== null;
  $("whole-button").disabled = running || !ctx.summary;
  $("whole-format").disabled = running;
  const p = whole.progress;
  $("whole-progress-row").hidden = !p;
  if (p) {
    $("whole-progress").value = p.total ? Math.min(1, p.lines / p.total) : 0;
    $("whole-progress-text").textContent = t("whole_progress", {
      lines: p.lines.toLocaleString(), total: p.total.toLocaleString(),
      read: p.bytes < 1e6 ? `${(p.bytes / 1e3).toFixed(1)} kB` : `${(p.bytes / 1e6).toFixed(1)} MB` });
  }
  const d = whole.done;
  $("whole-verdict").className = d ? d.outcome : running ? "running" : "";
  $("whole-verdict").textContent = d
    ? (d.outcome === "pass" ? t("whole_pass", { time: seconds(d.ms) })
      : t("whole_fail", { step: t(`w_s_${d.step}`), reason: tr(d.reason) }))
    : running ? t("whole_running") : "";
  $("whole-steps").replaceChildren(...WHOLE_STEPS.filter((id) => whole.steps.has(id)).map((id) => {
    const s = whole.steps.get(id);
    return el("li", { class: s.status, "data-step": id, "data-status": s.status,
                      ...(s.ms !== undefined ? { "data-ms": s.ms.toFixed(1) } : {}) },
      el("span", { class: "title", text: t(`w_s_${id}`) }),
      s.ms !== undefined ? el("span", { class: "took", text: seconds(s.ms) }) : null,
      s.detail ? el("p", { class: "detail", text: tr(s.detail) }) : null);
  }));
}

function onWhole() {
  if (whole.worker) return;
  whole.steps.clear();
  whole.progress = null;
  whole.done = null;
  delete document.body.dataset.whole;
  const worker = new Worker("/static/public/whole.js", { type: "module" });
  whole.worker = worker;
  const finish = (done) => {
    whole.done = done;
    whole.worker = null;
    worker.terminate();
    renderWhole();
    $("whole-verdict").dataset.ms = (done.ms ?? 0).toFixed(1);
    document.body.dataset.whole = done.outcome;
  };
  worker.onmessage = ({ data }) => {
    if (data.type === "step") whole.steps.set(data.id, data);
    else if (data.type === "progress") whole.progress = data;
    else if (data.type === "done") { finish(data); return; }
    renderWhole();
  };
  worker.onerror = (event) => {
    event.preventDefault();
    finish({ outcome: "fail", step: "error", reason: ["x_raw", { text: String(event.message || "worker error") }] });
  };
  worker.postMessage({ base, format: $("whole-format").value });
  renderWhole();
}

function render() {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  $("language").textContent = t("language_toggle");
  document.querySelectorAll("[data-i18n]").forEach((node) => { node.textContent = t(node.dataset.i18n); });
  if (ctx.campaign) {
    renderStatus();
    renderTimeline();
    renderCommitment();
    renderSeed();
    renderDraw();
    renderDownloads();
    renderWhole();
  }
  renderCheck();
}

const optional = (response) => (response.status === 200 ? response.body : null);

async function load() {
  const campaign = await fetchJson(base);
  if (campaign.status === 404) throw new Error(t("not_found", { id: campaignId }));
  if (campaign.status !== 200) throw new Error(`HTTP ${campaign.status}`);
  ctx.campaign = campaign.body;
  const [keys, commitment, ceremony, beacon, summary] = await Promise.all(
    ["/v1/keys", `${base}/commitment`, `${base}/ceremony`, `${base}/beacon`, `${base}/draw`].map(fetchJson));
  ctx.keys = optional(keys) || {};
  ctx.commitment = optional(commitment);
  ctx.ceremony = optional(ceremony);
  ctx.beacon = optional(beacon);
  ctx.summary = ctx.commitment ? optional(summary) : null;
  if (ctx.commitment) ctx.commitmentStep = await checkCommitment(ctx.keys, ctx.commitment);
  if (ctx.summary) ctx.seedCheck = await checkSeed(ctx.campaign, ctx.keys, ctx.commitment, ctx.summary);
}

async function onCheck() {
  $("check-button").disabled = true;
  $("verdict").textContent = t("checking");
  delete document.body.dataset.checked;
  try {
    lastCheck = await checkTicket(ctx, $("ticket-input").value);
  } catch (error) {
    lastCheck = { outcome: "rejected", verdict: ["v_rejected", { reason: [String(error.message || error)] }], steps: [] };
  }
  renderCheck();
  $("check-button").disabled = false;
  document.body.dataset.checked = lastCheck.outcome;
}

$("language").addEventListener("click", () => {
  lang = lang === "zh" ? "en" : "zh";
  localStorage.setItem("stimulus-lang", lang);
  render();
});
$("check-form").addEventListener("submit", (event) => { event.preventDefault(); onCheck(); });
$("whole-form").addEventListener("submit", (event) => { event.preventDefault(); onWhole(); });
render();
load().then(() => {
  render();
  $("check-button").disabled = false;
  document.body.dataset.loaded = "true";
}, (error) => {
  $("campaign-name").textContent = t("load_failed", { reason: String(error.message || error) });
  document.body.dataset.loaded = "error";
});
