// The operators' dashboard: each domain's admin JSON, read with the operator's bearer token
// (kept in this tab's sessionStorage only) and redrawn every few seconds.
"use strict";

const REFRESH_MS = 3000;
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
let campaign = params.get("campaign") || "";
let token = sessionStorage.getItem("stimulus-token") || "";
let timer = null;
let updates = 0;

const yuan = (fen) => (fen / 100).toLocaleString("en", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const count = (n) => Number(n || 0).toLocaleString("en");
const esc = (text) => String(text).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);

class Unauthorised extends Error {}

async function get(path, optional = false) {
  const response = await fetch(path, { headers: { Authorization: `Bearer ${token}`, Accept: "application/json" } });
  if (response.status === 401 || response.status === 403) throw new Unauthorised(`HTTP ${response.status}`);
  if (response.status === 404 && optional) return null;
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

function dl(el, rows) {
  el.innerHTML = rows.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join("");
}

// Horizontal bars: one row per item, the label left, the value right.
function bars(el, items, format) {
  if (!items.length) { el.innerHTML = '<p class="muted">nothing yet</p>'; return; }
  const top = Math.max(1, ...items.map((i) => i.value));
  const rowH = 20, width = 600, label = 120, room = width - label - 110;
  const rows = items.map((item, n) => {
    const y = n * rowH, w = Math.max(1, (room * item.value) / top);
    return `<text class="axis" x="0" y="${y + 14}">${esc(item.label)}</text>` +
      `<rect class="bar ${item.cls || ""}" x="${label}" y="${y + 3}" width="${w.toFixed(1)}" height="${rowH - 6}"></rect>` +
      `<text class="axis" x="${label + w + 6}" y="${y + 14}">${esc(format(item.value))}</text>`;
  });
  el.innerHTML = `<svg viewBox="0 0 ${width} ${items.length * rowH}" role="img">${rows.join("")}</svg>`;
}

// Vertical bars over time: registrations per minute.
function columns(el, points) {
  if (!points.length) { el.innerHTML = '<p class="muted">no registrations yet</p>'; return; }
  const shown = points.slice(-90), width = 900, height = 140, top = Math.max(1, ...shown.map((p) => p.registrations));
  const w = width / shown.length;
  const rects = shown.map((p, i) => {
    const h = ((height - 20) * p.registrations) / top;
    return `<rect class="bar" x="${(i * w).toFixed(1)}" y="${(height - 16 - h).toFixed(1)}" width="${Math.max(1, w - 1).toFixed(1)}" height="${h.toFixed(1)}"><title>${esc(new Date(p.at).toLocaleString())}: ${p.registrations}</title></rect>`;
  });
  const first = new Date(shown[0].at).toLocaleTimeString(), last = new Date(shown[shown.length - 1].at).toLocaleTimeString();
  el.innerHTML = `<svg viewBox="0 0 ${width} ${height}" role="img">${rects.join("")}` +
    `<text class="axis" x="0" y="${height - 2}">${esc(first)}</text>` +
    `<text class="axis" x="${width}" y="${height - 2}" text-anchor="end">${esc(last)} · peak ${top}/min</text></svg>`;
}

function renderIssuance(progress) {
  const body = $("issuance").tBodies[0];
  if (!progress) { body.innerHTML = '<tr><td colspan="7" class="muted">no packets yet</td></tr>'; return; }
  const total = Math.max(1, progress.packets - (progress.by_state.cancelled || 0));
  body.innerHTML = progress.banks.map((b) => {
    const share = ((100 * b.issued) / total).toFixed(1);
    return `<tr data-bank="${esc(b.bank_code)}"><td>${esc(b.bank_code)}</td><td class="issued">${count(b.issued)}</td>` +
      `<td>${yuan(b.issued_fen)}</td><td class="pending">${count(b.pending)}</td><td>${count(b.failed)}</td>` +
      `<td>${count(b.dead_letters)}</td><td class="muted">${share}%</td></tr>`;
  }).join("");
  $("iss-issued").textContent = count(progress.issued);
  $("iss-fen").textContent = yuan(progress.issued_fen);
  $("iss-pending").textContent = count(progress.pending);
  $("iss-failed").textContent = count(progress.failed);
  $("iss-dead").textContent = count(progress.dead_letters);
  const eta = progress.eta_s == null ? "" : ` · ETA ${Math.ceil(progress.eta_s)} s`;
  $("issuance-rate").textContent = `${progress.rate_per_s.toFixed(1)} packets/s${eta} · ${count(progress.unclaimed)} unclaimed`;
}

function renderJobs(jobs) {
  const mine = jobs.filter((j) => j.args.subject === campaign);
  const body = $("jobs").tBodies[0];
  if (!mine.length) { body.innerHTML = '<tr><td colspan="7" class="muted">no job for this campaign yet</td></tr>'; return; }
  body.innerHTML = mine.map((j) => {
    const total = j.progress_total ?? 0;
    const bar = total ? `<progress max="${total}" value="${j.progress_done}"></progress> ${j.progress_done}/${total}` : "—";
    const error = j.error ? `${esc(j.error.code)}: ${esc(j.error.detail)}` : "";
    return `<tr data-job="${j.id}" data-state="${esc(j.state)}"><td>#${j.id}</td><td>${esc(j.kind)}</td>` +
      `<td class="${j.state === "failed" ? "bad" : ""}">${esc(j.state)}</td><td>${esc(j.progress_step ?? "")}</td>` +
      `<td>${bar}</td><td>${j.attempts}</td><td class="bad">${error}</td></tr>`;
  }).join("");
}

function renderReport(report) {
  if (!report) return;
  const m = report.money;
  dl($("ledger"), [["budget", yuan(m.budget_fen)], ["allocated", yuan(m.allocated_fen)], ["issued", yuan(m.issued_fen)],
    ["cancelled", yuan(m.cancelled_fen)], ["redeemed (reconciled)", yuan(m.redeemed_fen)],
    ["pending reconciliation", yuan(m.pending_fen)], ["reclaimed", yuan(m.reclaimed_fen)],
    ["outstanding", yuan(m.outstanding_fen)],
    ["consumption multiplier", report.consumption_multiplier == null ? "—" : `${report.consumption_multiplier.toFixed(2)}x`]]);
  const spend = (rows) => rows.map((r) => ({ label: r.key, value: r.spent_fen }));
  bars($("by-day"), spend(report.spend_by_day), yuan);
  bars($("by-district"), spend(report.spend_by_district), yuan);
  bars($("by-category"), spend(report.spend_by_category), yuan);
  $("breaks").tBodies[0].innerHTML = report.breaks.map((b) =>
    `<tr data-class="${esc(b.class)}"><td>${esc(b.class)}</td><td>${count(b.open)}</td><td>${yuan(b.open_fen)}</td>` +
    `<td>${count(b.resolved)}</td></tr>`).join("");
}

async function refresh() {
  const id = encodeURIComponent(campaign);
  try {
    const [info, timeline, progress, report, commitment, jobs] = await Promise.all([
      get(`/v1/campaigns/${id}`), get(`/v1/admin/campaigns/${id}/registrations/timeline?bucket=minute`),
      get(`/v1/admin/campaigns/${id}/issuance`, true), get(`/v1/admin/campaigns/${id}/report`, true),
      get(`/v1/campaigns/${id}/commitment`, true), get("/v1/admin/jobs")]);
    $("login").hidden = true;
    $("board").hidden = false;
    $("campaign-name").textContent = info.name;
    $("campaign-state").textContent = info.state;
    $("reg-total").textContent = count(timeline.registered);
    $("reg-withdrawn").textContent = count(timeline.withdrawn);
    const refused = Object.entries(timeline.ineligible);
    $("reg-refused").textContent = refused.length ? refused.map(([c, n]) => `${c} ${count(n)}`).join(", ") : "none";
    columns($("reg-chart"), timeline.points);
    const winners = report ? Object.values(report.packets).reduce((a, b) => a + b, 0) : 0;
    dl($("draw"), [["state", info.state], ["registrants committed", commitment ? count(commitment.tree_size) : "not yet"],
      ["root", commitment ? commitment.root_hex : "—"], ["beacon", `${info.beacon.kind} round ${info.beacon.round ?? "—"}`],
      ["winners (packets)", count(winners)], ["algorithm", info.draw_rules.algorithm]]);
    renderIssuance(progress);
    renderJobs(jobs);
    renderReport(report);
    updates += 1;
    document.body.dataset.updated = String(updates);
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    if (error instanceof Unauthorised) {
      stop();
      showLogin(`the token was refused (${error.message}): an operator or auditor token is needed`);
      return;
    }
    $("updated").textContent = `update failed: ${error.message}; retrying`;
  }
}

function stop() { if (timer) { clearInterval(timer); timer = null; } }

function start() {
  stop();
  refresh();
  timer = setInterval(refresh, REFRESH_MS);
}

function showLogin(message) {
  $("board").hidden = true;
  $("login").hidden = false;
  $("token").value = "";
  $("campaign").value = campaign;
  $("login-error").textContent = message || "";
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  token = $("token").value.trim();
  campaign = $("campaign").value.trim();
  sessionStorage.setItem("stimulus-token", token);
  history.replaceState(null, "", `?campaign=${encodeURIComponent(campaign)}`);
  start();
});

if (token && campaign) start(); else showLogin("");
