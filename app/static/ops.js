// syncgov operations page: reads this worker's /metrics (Prometheus text format) every
// few seconds and an order's trace on demand. Plain JS, no build step, no dependencies.
"use strict";

const POLL_MS = 5000;
const SLAS = [
  ["order release → accepted", "syncgov_order_release_to_accepted_seconds"],
  ["order release → picked", "syncgov_order_release_to_picked_seconds"],
  ["packed → shipped", "syncgov_order_packed_to_shipped_seconds"],
  ["shipment confirmed → posted in ERP", "syncgov_shipment_confirmed_to_posted_seconds"],
  ["return received → posted in ERP", "syncgov_return_received_to_posted_seconds"],
];
const DRIFT_KINDS = ["shipped_not_posted", "posted_not_shipped", "stock_moves_missing"];
let previous = null;

// -- Prometheus text format ------------------------------------------------------------------

function unescapeLabel(v) {
  return v.replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
}

/** [{name, labels, value}] from the text exposition format (comments skipped). */
function parseMetrics(text) {
  const samples = [];
  const line = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
  const label = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
  for (const raw of text.split("\n")) {
    if (!raw || raw.startsWith("#")) continue;
    const m = line.exec(raw);
    if (!m) continue;
    const labels = {};
    for (const l of (m[2] || "").matchAll(label)) labels[l[1]] = unescapeLabel(l[2]);
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return samples;
}

function series(samples, name) {
  return samples.filter((s) => s.name === name);
}

function value(samples, name) {
  const found = series(samples, name);
  return found.length ? found[0].value : null;
}

function sumBy(samples, name, label) {
  const out = {};
  for (const s of series(samples, name)) out[s.labels[label]] = (out[s.labels[label]] || 0) + s.value;
  return out;
}

/** Like PromQL's histogram_quantile over cumulative buckets: linear within the bucket. */
function quantile(q, buckets) {
  const sorted = buckets.map((b) => [Number(b.labels.le), b.value]).sort((a, b) => a[0] - b[0]);
  const total = sorted.length ? sorted[sorted.length - 1][1] : 0;
  if (!total) return null;
  const rank = q * total;
  let lower = 0, below = 0;
  for (const [le, count] of sorted) {
    if (count >= rank) {
      if (le === Infinity) return lower;
      return lower + (le - lower) * ((rank - below) / Math.max(count - below, 1e-9));
    }
    lower = le; below = count;
  }
  return lower;
}

// -- rendering -----------------------------------------------------------------------------

function num(n) {
  return n === null || n === undefined ? "–" : Number.isInteger(n) ? String(n) : n.toFixed(2);
}

function duration(s) {
  if (s === null || s === undefined || Number.isNaN(s)) return "–";
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${(s / 3600).toFixed(1)} h`;
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

/** Fill a table body with [key, text, cls?] rows; an empty list shows `empty`. */
function rows(tableId, items, empty) {
  const body = document.querySelector(`#${tableId} tbody`);
  body.replaceChildren();
  if (!items.length) {
    const tr = document.createElement("tr");
    tr.appendChild(cell(empty, "empty"));
    body.appendChild(tr);
    return;
  }
  for (const [key, text, cls] of items) {
    const tr = document.createElement("tr");
    tr.dataset.key = key;
    tr.append(cell(key), cell(text, `num ${cls || ""}`.trim()));
    body.appendChild(tr);
  }
}

/** The sum of every series of a metric (null when it has none). */
function total(samples, name) {
  const found = series(samples, name);
  return found.length ? found.reduce((acc, s) => acc + s.value, 0) : null;
}

const ROLES = ["sink", "source", "reconcile"];

/** Each ERP client's figures under its role (sink, source, reconcile): its current adaptive
 * rate and its share of the quota; one client never hides another's. */
function roleRows(samples) {
  const rate = sumBy(samples, "syncgov_erp_rate_limit_per_second", "role");
  const share = sumBy(samples, "syncgov_erp_quota_share_per_second", "role");
  return ROLES.filter((r) => r in rate || r in share).map((r) => [
    `rate limit, ${r} (req/s)`, `${num(rate[r])} of ${num(share[r])}`, rate[r] < share[r] ? "warn" : ""]);
}

function counts(totals) {
  return Object.keys(totals).sort().map((k) => [k, num(totals[k])]);
}

/** Documents stopped at a dead-lettered or parked milestone, and what waits behind them
 * (until `syncgov dlq replay`). Shown once the sink reports them. */
function heldRows(samples) {
  const blocked = sumBy(samples, "syncgov_erp_blocked_documents", "reason");
  const held = value(samples, "syncgov_erp_held_milestones");
  if (held === null && !Object.keys(blocked).length) return [];
  const stopped = (blocked.dead_lettered || 0) + (blocked.parked || 0);
  return [
    ["documents stopped (dead-lettered / parked)", `${num(blocked.dead_lettered || 0)} / ${num(blocked.parked || 0)}`,
      stopped ? "bad" : "ok"],
    ["milestones held behind them", num(held), held ? "bad" : ""],
  ];
}

function render(samples) {
  rows("milestones", counts(sumBy(samples, "syncgov_milestones_total", "type")), "no milestones yet");
  rows("exceptions", counts(sumBy(samples, "syncgov_sync_exceptions_total", "code")), "no sync exceptions");

  const dead = counts(sumBy(samples, "syncgov_dead_letters_total", "reason")).map(([k, v]) => [`input: ${k}`, v, "warn"]);
  const outcomes = sumBy(samples, "syncgov_erp_calls_total", "outcome");
  const rejected = outcomes.permanent_error;
  if (rejected) dead.push(["ERP rejected (ERP dead letters)", num(rejected), "bad"]);
  if (outcomes.parked) dead.push(["ERP parked (retries exhausted)", num(outcomes.parked), "bad"]);
  if (outcomes.undecodable) dead.push(["ERP sink: undecodable milestones", num(outcomes.undecodable), "bad"]);
  rows("dead-letters", dead, "no dead letters");

  rows("erp-calls", counts(sumBy(samples, "syncgov_erp_calls_total", "outcome")), "no ERP calls yet");

  const throttled = total(samples, "syncgov_erp_throttled_total");
  const recent = previous === null || throttled === null ? 0 : throttled - (total(previous, "syncgov_erp_throttled_total") || 0);
  const age = value(samples, "syncgov_erp_backlog_oldest_age_seconds");
  rows("erp-state", [
    ["throttle state", recent > 0 ? `throttled (+${num(recent)})` : "not throttled", recent > 0 ? "bad" : "ok"],
    ...roleRows(samples),
    ["throttle answers", num(throttled)],
    ["waited for Retry-After", duration(total(samples, "syncgov_erp_retry_after_seconds_total"))],
    ["backlog (milestones)", num(value(samples, "syncgov_erp_backlog_milestones"))],
    ["oldest in backlog", duration(age), age > 1800 ? "bad" : ""],
    ...heldRows(samples),
  ], "no ERP metrics");

  const drift = sumBy(samples, "syncgov_sync_drift_documents", "kind");
  const oldest = sumBy(samples, "syncgov_sync_drift_oldest_age_seconds", "kind");
  const last = value(samples, "syncgov_reconcile_last_success_timestamp_seconds");
  rows("drift", last ? DRIFT_KINDS.map((k) => [k, drift[k] ? `${num(drift[k])} (oldest ${duration(oldest[k])})` : "0", drift[k] ? "bad" : "ok"]) : [],
    "not reconciled yet");
  document.getElementById("reconciled").textContent = last
    ? `last reconciliation ${duration(Date.now() / 1000 - last)} ago` : "";

  const sla = document.querySelector("#sla tbody");
  sla.replaceChildren();
  for (const [title, name] of SLAS) {
    const buckets = series(samples, `${name}_bucket`);
    const tr = document.createElement("tr");
    tr.dataset.key = name;
    tr.append(cell(title), cell(num(value(samples, `${name}_count`) || 0), "num"),
      cell(duration(quantile(0.5, buckets)), "num"), cell(duration(quantile(0.95, buckets)), "num"));
    sla.appendChild(tr);
  }
}

async function poll() {
  const status = document.getElementById("status");
  try {
    const resp = await fetch("/metrics", { cache: "no-store" });
    if (!resp.ok) throw new Error(`/metrics answered ${resp.status}`);
    const samples = parseMetrics(await resp.text());
    render(samples);
    previous = samples;
    const recovering = value(samples, "syncgov_table_recovery_in_progress");
    status.textContent = `${recovering ? "recovering tables" : "ready"} · updated ${new Date().toLocaleTimeString()}`;
    status.className = recovering ? "status bad" : "status";
  } catch (err) {
    status.textContent = `metrics unavailable: ${err.message} (showing the last values)`;
    status.className = "status bad";
  }
}

// -- open dead letters ----------------------------------------------------------------------

/** Rows [kind, id, reason, record] of the open dead letters of both kinds. */
function deadLetterRows(doc) {
  const input = doc.input.entries.map((e) => [
    "input", e.id, e.reason, `${e.where}: ${e.raw_encoding === "base64" ? "(base64) " : ""}${e.raw}`]);
  const erp = doc.erp.entries.map((e) => [
    `ERP ${e.kind}`, e.id, `${e.status === null || e.status === undefined ? "" : e.status + " "}${e.reason}`,
    `${e.type} ${e.document}${e.held ? ` (${e.held} held behind it)` : ""}`]);
  return erp.concat(input);
}

async function pollDeadLetters() {
  const body = document.querySelector("#open-dead-letters tbody");
  const note = document.getElementById("dead-letter-counts");
  try {
    const resp = await fetch("/ops/dead-letters", { cache: "no-store" });
    if (!resp.ok) throw new Error(`/ops/dead-letters answered ${resp.status}`);
    const doc = await resp.json();
    const items = deadLetterRows(doc);
    body.replaceChildren();
    if (!items.length) {
      const tr = document.createElement("tr");
      tr.appendChild(cell("no open dead letters", "empty"));
      body.appendChild(tr);
    }
    for (const [kind, id, reason, record] of items) {
      const tr = document.createElement("tr");
      tr.dataset.key = id;
      tr.append(cell(kind, kind === "input" ? "warn" : "bad"), cell(id), cell(reason), cell(record));
      body.appendChild(tr);
    }
    note.textContent = `open: ${doc.input.open} input, ${doc.erp.open} ERP`;
  } catch (err) {
    note.textContent = `dead letters unavailable: ${err.message}`;
  }
}

// -- order trace ---------------------------------------------------------------------------

const TRACE_COLUMNS = ["at", "kind", "type", "id"];

function details(entry) {
  return Object.keys(entry).filter((k) => !TRACE_COLUMNS.includes(k))
    .map((k) => `${k}: ${typeof entry[k] === "object" ? JSON.stringify(entry[k]) : entry[k]}`).join("  ·  ");
}

function renderTrace(target, data) {
  const entries = data.entries || [];
  const table = document.createElement("table");
  table.id = "trace-entries";
  const head = document.createElement("tr");
  for (const h of ["time", "kind", "type", "id", "details"]) {
    const th = document.createElement("th");
    th.textContent = h;
    head.appendChild(th);
  }
  table.appendChild(head);
  for (const e of entries) {
    const tr = document.createElement("tr");
    const kind = cell("");
    const badge = document.createElement("span");
    badge.className = `kind kind-${e.kind}`;
    badge.textContent = e.kind;
    kind.appendChild(badge);
    const id = cell("");
    const code = document.createElement("code");
    code.textContent = e.id || "";
    id.appendChild(code);
    tr.append(cell(e.at || ""), kind, cell(e.type || ""), id, cell(details(e)));
    table.appendChild(tr);
  }
  const title = document.createElement("p");
  title.textContent = `${data.warehouse_id} / ${data.order_id}: ${entries.length} entries`;
  target.replaceChildren(title, table);
}

async function search(warehouse, order) {
  const target = document.getElementById("trace");
  target.textContent = "loading…";
  const url = `/orders/${encodeURIComponent(warehouse)}/${encodeURIComponent(order)}/trace`;
  try {
    const resp = await fetch(url, { cache: "no-store" });
    const text = await resp.text();
    let data = null;
    try { data = JSON.parse(text); } catch (_) { /* not JSON: shown as text below */ }
    if (!resp.ok || !data) {
      const p = document.createElement("p");
      p.className = "bad";
      p.id = "trace-error";
      p.textContent = `${resp.status}: ${(data && data.error) || text || resp.statusText}`;
      target.replaceChildren(p);
      return;
    }
    renderTrace(target, data);
  } catch (err) {
    target.textContent = `trace unavailable: ${err.message}`;
  }
}

document.getElementById("search").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const warehouse = document.getElementById("warehouse").value.trim();
  const order = document.getElementById("order").value.trim();
  history.replaceState(null, "", `#order=${encodeURIComponent(warehouse)}/${encodeURIComponent(order)}`);
  search(warehouse, order);
});

// A link like /#order=WH1/OUT-000042 opens with that order's trace.
const linked = /^#order=([^/]+)\/(.+)$/.exec(location.hash);
if (linked) {
  const [warehouse, order] = [decodeURIComponent(linked[1]), decodeURIComponent(linked[2])];
  document.getElementById("warehouse").value = warehouse;
  document.getElementById("order").value = order;
  search(warehouse, order);
}

poll();
setInterval(poll, POLL_MS);
pollDeadLetters();
setInterval(pollDeadLetters, POLL_MS);
