// offramp console: fetches /ui/api/... and renders each page; charts are inline SVG drawn here.
// No inline script or style is used (the pages' Content-Security-Policy forbids them).
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;
const page = document.body.dataset.page;
const isAdmin = document.body.dataset.admin === "true";
const main = document.getElementById("main");
const SVGNS = "http://www.w3.org/2000/svg";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children.flat()) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function toast(message, isError) {
  const box = document.getElementById("toast");
  const m = el("div", { class: "msg" + (isError ? " error" : ""), "data-kind": isError ? "error" : "info" }, message);
  box.append(m);
  setTimeout(() => m.remove(), 6000);
}

async function api(path, body) {
  const opts = { credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    opts.method = "POST";
    opts.headers["Content-Type"] = "application/json";
    opts.headers["X-CSRF-Token"] = csrf;
    opts.body = JSON.stringify(body);
  }
  const resp = await fetch(path, opts);
  let data = null;
  try { data = await resp.json(); } catch (e) { data = null; }
  if (resp.status === 401) { window.location.href = "/ui/login"; }
  if (!resp.ok) {
    const msg = data && data.error ? data.error.message : `request failed (${resp.status})`;
    const err = new Error(msg);
    err.status = resp.status;
    throw err;
  }
  return data;
}

const pct = (x) => (x === null || x === undefined ? "—" : (100 * x).toFixed(1) + "%");
const num = (x, d = 3) => (x === null || x === undefined ? "—" : Number(x).toFixed(d));
const usd = (x) => "$" + Number(x || 0).toFixed(x >= 100 ? 0 : 4);
const when = (t) => (t ? new Date(typeof t === "number" ? t * 1000 : t).toLocaleString() : "—");

function card(title, id, value, small) {
  return el("div", { class: "card" }, el("h3", {}, title), el("div", { class: "big", id }, value),
    small ? el("div", { class: "small", id: id + "-note" }, small) : null);
}

function table(head, rows, attrs) {
  return el("table", attrs || {}, el("thead", {}, el("tr", {}, head.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.map((r) => el("tr", {}, r.map((c) => (c instanceof Node ? el("td", {}, c) : el("td", {}, c)))))));
}

// ---------------------------------------------------------------- charts
function shareBar(shares) {
  const w = 360, h = 34;
  const s = svg("svg", { width: w, height: h + 18, viewBox: `0 0 ${w} ${h + 18}`, id: "chart-shares", role: "img" });
  let x = 0;
  for (const [key, cls] of [["local", "bar-local"], ["llm", "bar-llm"], ["refused", "bar-refused"]]) {
    const width = (shares[key] || 0) * w;
    if (width > 0) s.append(svg("rect", { x, y: 0, width, height: h, class: cls }, svg("title", {}, `${key}: ${pct(shares[key])}`)));
    x += width;
  }
  s.append(svg("text", { x: 2, y: h + 14 }, `local ${pct(shares.local)} · LLM ${pct(shares.llm)} · refused ${pct(shares.refused)}`));
  return s;
}

function volumeChart(volumes) {
  const w = 720, h = 170, pad = 30;
  const s = svg("svg", { width: w, height: h, viewBox: `0 0 ${w} ${h}`, id: "chart-volumes", role: "img" });
  const labels = Object.keys(volumes.series);
  const max = Math.max(1, ...labels.flatMap((l) => volumes.series[l]));
  const n = volumes.minutes.length;
  labels.forEach((label, i) => {
    const pts = volumes.series[label].map((v, j) => `${pad + (j * (w - 2 * pad)) / Math.max(1, n - 1)},${h - pad - (v * (h - 2 * pad)) / max}`);
    s.append(svg("polyline", { points: pts.join(" "), class: `line series-${i % 8}` }, svg("title", {}, label)));
    s.append(svg("text", { x: pad + 110 * i, y: 14, class: `series-${i % 8}` }, label));
  });
  s.append(svg("text", { x: pad, y: h - 8 }, "60 min ago"), svg("text", { x: w - pad - 24, y: h - 8 }, "now"));
  s.append(svg("text", { x: 2, y: pad }, String(max)));
  return s;
}

function intervalBars(rows) {
  // agreement with its 95% interval, one row per label
  const w = 360, rowH = 20, h = rows.length * rowH + 10;
  const s = svg("svg", { width: w, height: h, viewBox: `0 0 ${w} ${h}`, id: "chart-agreement", role: "img" });
  rows.forEach(([label, m], i) => {
    const y = 5 + i * rowH, x0 = 120, span = w - x0 - 10;
    s.append(svg("text", { x: 2, y: y + 13 }, label));
    s.append(svg("line", { x1: x0 + m.ci95[0] * span, x2: x0 + m.ci95[1] * span, y1: y + 9, y2: y + 9, stroke: "#6b7280", "stroke-width": 2 }));
    s.append(svg("circle", { cx: x0 + m.agreement * span, cy: y + 9, r: 4, fill: "#2563eb" }));
  });
  return s;
}

// ---------------------------------------------------------------- overview
async function overview() {
  let data;
  try { data = await api("/ui/api/overview"); } catch (e) { toast(e.message, true); return; }
  const t = data.traffic;
  const lat = t.latency_ms;
  const cards = el("div", { class: "grid" },
    card("Live version", "v-version", data.version, data.promoted ? `promoted ${when(data.promoted)}` : `created ${when(data.created)}`),
    card("Requests", "v-requests", t.requests, "classify and chat calls"),
    card("Messages", "v-messages", t.messages, data.shadow_mode ? `shadow mode: ${data.shadow_mode}` : "classified"),
    card("Handled locally", "v-local-share", pct(t.shares.local), `${t.routes.local} messages`),
    card("Sent to the LLM", "v-llm-share", pct(t.shares.llm), `${t.routes.llm} messages`),
    card("Refused (don't know)", "v-refused-share", pct(t.shares.refused), `${t.routes.refused} messages`),
    card("Not spent on the LLM today", "v-saved-today", usd(t.usd_saved.today), data.price_model ? `priced as ${data.price_model}` : "no price row"),
    card("… this month", "v-saved-month", usd(t.usd_saved.month), "estimated"),
    card("Latency p50", "v-p50", lat ? num(lat.p50, 2) + " ms" : "—", lat ? `over the last ${lat.n} requests` : "no requests yet"),
    card("Latency p99", "v-p99", lat ? num(lat.p99, 2) + " ms" : "—", ""),
    card("Waiting for review", "v-review", data.review.total, `${data.review.disagreed} disagreed · ${data.review.rejected} rejected · ${data.review.unsure} unsure`),
  );
  const shadowRows = Object.entries(data.shadow);
  const drift = data.drift;
  const dv = drift.values;
  const driftRows = dv
    ? [
        ["PSI confidence", num(dv.confidence), `above ${drift.psi_threshold} is drift`, dv.confidence > drift.psi_threshold ? "DRIFT" : "ok"],
        ["PSI label mix", num(dv.label_mix), `above ${drift.psi_threshold} is drift`, dv.label_mix > drift.psi_threshold ? "DRIFT" : "ok"],
        ["don't-know rate change", (dv.dont_know >= 0 ? "+" : "") + num(dv.dont_know), "vs training", ""],
        ["under-threshold rate change", (dv.fallback >= 0 ? "+" : "") + num(dv.fallback), "vs training", ""],
      ]
    : [];
  const driftTable = table(["signal", "value", "threshold", ""], driftRows.map((r) => [r[0], r[1], r[2], el("span", { class: r[3] === "DRIFT" ? "alert" : "ok" }, r[3])]), { id: "drift-table" });
  main.replaceChildren(
    cards,
    el("section", {}, el("h2", {}, "Where messages go"), shareBar(t.shares)),
    el("section", {}, el("h2", {}, "Messages per minute, by label"), volumeChart(t.volumes)),
    el("section", {}, el("h2", {}, "Shadow agreement by the small model's label (95% Wilson interval)"),
      shadowRows.length
        ? [table(["label", "compared", "agreed", "agreement", "95% interval"],
            shadowRows.map(([l, m]) => [l, m.compared, m.agreed, num(m.agreement), `[${num(m.ci95[0])}, ${num(m.ci95[1])}]`]), { id: "shadow-table" }),
           intervalBars(shadowRows)]
        : el("p", { class: "muted", id: "shadow-none" }, "No shadow comparisons yet (a pipeline's shadow: section sends them).")),
    el("section", {}, el("h2", {}, "Drift against the training reference"),
      dv ? driftTable : el("p", { class: "muted", id: "drift-waiting" }, `Waiting for ${drift.min_messages || 200} messages (${drift.messages} so far).`)),
    ...(data.proxy ? [proxySection(data.proxy)] : []),
    ...(data.stages ? [stagesSection(data.stages)] : []),
  );
}

function stagesSection(stages) {
  // a chain: each stage's own version, traffic, time, LLM share and shadow agreement
  const rows = stages.map((s) => {
    const r = s.routes || {};
    const sh = s.shadow;
    const agreement = !sh ? "—" : sh.compared ? `${num(sh.agreement)} [${num(sh.ci95[0])}, ${num(sh.ci95[1])}] of ${sh.compared}` : "none compared yet";
    const replicas = s.replicas ? Object.entries(s.replicas).map(([k, n]) => `${k}: ${n}`).join(", ") : "";
    return [s.stage, s.kind, s.version || "", s.messages, s.ms_per_message === null ? "—" : num(s.ms_per_message, 3),
      r.local || 0, r.llm || 0, (r.refused || 0) + (r.unavailable || 0), s.llm_share === null ? "—" : pct(s.llm_share),
      agreement, replicas];
  });
  return el("section", { id: "stages" }, el("h2", {}, "Stages of the chain"),
    table(["stage", "kind", "version", "messages", "ms per message", "local", "LLM", "refused / unavailable", "LLM share",
      "shadow agreement [95% interval]", "replicas"], rows, { id: "stages-table" }));
}

function proxySection(p) {
  // proxy mode: the app's requests answered here or sent on to its own LLM, and why
  const why = {
    no_task: "another prompt than the task", template_changed: "the task's template changed",
    schema_changed: "the task's schema or tool changed", unfillable_field: "a required field the model cannot fill",
    unsure: "the small model was unsure", shadow: "shadow mode (the LLM answers)", not_chat: "another endpoint",
  };
  const rows = [["answered here", p.local, p.requests ? pct(p.local / p.requests) : "—"]].concat(
    Object.entries(p.forwarded).filter(([, n]) => n > 0)
      .map(([r, n]) => [`sent to the LLM: ${why[r] || r}`, n, p.requests ? pct(n / p.requests) : "—"]));
  const changed = p.prompts.changed_share;
  return el("section", { id: "proxy" }, el("h2", {}, "In front of the app's LLM"),
    p.warning ? el("p", { class: "alert", id: "proxy-warning" }, `${when(p.warning.time)}: ${p.warning.message}`) : "",
    table(["requests", "count", "share"], rows, { id: "proxy-table" }),
    el("p", { class: "muted", id: "proxy-changed" },
      changed === null ? "No request of the task yet."
        : `${pct(changed)} of the task's requests came with a changed prompt (${p.prompts.changed} of ${p.prompts.requests}).`));
}

// ---------------------------------------------------------------- review
const review = { items: [], index: 0, chosen: null, labels: [], feedback: false };

async function loadReview() {
  const params = new URLSearchParams({ limit: "20" });
  for (const id of ["f-label", "f-source", "f-since"]) {
    const v = document.getElementById(id) ? document.getElementById(id).value : "";
    if (v) params.set(id.slice(2), v);
  }
  let data;
  try { data = await api("/ui/api/review?" + params.toString()); } catch (e) { toast(e.message, true); return; }
  review.items = data.items;
  review.labels = data.labels;
  review.feedback = data.feedback;
  review.index = Math.min(review.index, Math.max(0, review.items.length - 1));
  review.chosen = null;
  renderReview(data.counts);
}

function reviewFilters() {
  const sel = (id, options) => el("select", { id }, options.map(([v, t]) => el("option", { value: v }, t)));
  const f = el("div", { class: "filters" },
    el("label", {}, "label", sel("f-label", [["", "any"], ...review.labels.map((l) => [l, l])])),
    el("label", {}, "source", sel("f-source", [["", "any"], ["disagreed", "LLM disagreed"], ["rejected", "don't know"], ["unsure", "least sure"]])),
    el("label", {}, "since", el("input", { id: "f-since", type: "date" })),
    el("button", { class: "action secondary", id: "f-apply", onclick: () => loadReview() }, "Filter"));
  return f;
}

function renderReview(counts) {
  let filters = document.getElementById("review-filters");
  if (!filters) {
    filters = el("div", { id: "review-filters" }, reviewFilters());
    main.replaceChildren(filters, el("p", { id: "review-counts" }), el("p", { class: "keys" },
      "Keys: 1–9 pick a label · Enter saves it · s skips."), el("div", { id: "review-list" }));
  }
  const labelSelect = document.getElementById("f-label");
  if (labelSelect.options.length <= 1) {
    for (const l of review.labels) labelSelect.append(el("option", { value: l }, l));
  }
  document.getElementById("review-counts").textContent =
    `${counts.total} waiting: ${counts.disagreed} where the LLM disagreed, ${counts.rejected} "don't know", ${counts.unsure} least sure · ${counts.reviewed} reviewed`;
  const list = document.getElementById("review-list");
  if (!review.feedback) {
    list.replaceChildren(el("p", { class: "error", id: "review-disabled" },
      "Corrections are not kept: add capture: {pool: ..., from: [feedback]} to the pipeline to review here."));
  }
  const rows = review.items.map((it, i) => {
    const choices = review.labels.slice(0, 9).map((l, j) =>
      el("button", { class: review.index === i && review.chosen === l ? "chosen" : "", "data-label": l,
        onclick: () => { review.index = i; review.chosen = l; renderReview(counts); } }, `${j + 1} ${l}`));
    const top = (it.top || []).map((t) => `${t.label} ${num(t.score, 2)}`).join(" · ");
    return el("div", { class: "item" + (i === review.index ? " current" : ""), "data-request-id": it.request_id },
      el("div", { class: "text" }, it.text),
      el("div", { class: "meta" }, `${it.source} · model: ${it.label} (${num(it.confidence, 3)}) · top: ${top}` +
        (it.llm ? ` · LLM: ${it.llm}` : "") + ` · ${when(it.time)}`),
      isAdmin && review.feedback ? el("div", { class: "choices" }, choices) : null);
  });
  if (review.feedback) {
    list.replaceChildren(...(rows.length ? rows : [el("p", { class: "muted", id: "review-empty" }, "Nothing waiting for review.")]));
  }
  if (!isAdmin) list.prepend(el("p", { class: "muted" }, "Read-only: reviewing needs an admin."));
}

async function submitReview() {
  const it = review.items[review.index];
  if (!it || !review.chosen || !isAdmin) return;
  try {
    await api("/ui/api/review", { request_id: it.request_id, label: review.chosen });
    toast(`saved ${review.chosen} for the message`, false);
    review.items.splice(review.index, 1);
  } catch (e) {
    toast(e.message, true);
  }
  await loadReview();
}

function reviewKeys(ev) {
  if (ev.target && ["INPUT", "SELECT", "TEXTAREA"].includes(ev.target.tagName)) return;
  const items = review.items;
  if (!items.length) return;
  if (/^[1-9]$/.test(ev.key)) {
    const label = review.labels[Number(ev.key) - 1];
    if (label) { review.chosen = label; renderReview(lastCounts()); }
  } else if (ev.key === "Enter") {
    ev.preventDefault();
    submitReview();
  } else if (ev.key === "s" || ev.key === "ArrowDown") {
    review.index = (review.index + 1) % items.length;
    review.chosen = null;
    renderReview(lastCounts());
  }
}

function lastCounts() {
  const text = document.getElementById("review-counts").textContent;
  const m = text.match(/(\d+) waiting: (\d+) where the LLM disagreed, (\d+) "don't know", (\d+) least sure · (\d+) reviewed/);
  return m ? { total: +m[1], disagreed: +m[2], rejected: +m[3], unsure: +m[4], reviewed: +m[5] } : { total: 0, disagreed: 0, rejected: 0, unsure: 0, reviewed: 0 };
}

// ---------------------------------------------------------------- models
async function models() {
  let data;
  try { data = await api("/ui/api/models"); } catch (e) { toast(e.message, true); return; }
  if (!data.registry) {
    main.replaceChildren(el("p", { class: "muted", id: "no-registry" },
      `Serving a model directory (version ${data.current}). Serve a registry to promote, roll back and retrain from here.`));
    return;
  }
  const rows = data.versions.map((v) => {
    const g = v.gate;
    const gate = g ? `${g.decision} vs ${g.against}: macro-F1 ${num(g.macro_f1.current, 4)} → ${num(g.macro_f1.candidate, 4)} [${num(g.macro_f1.ci95[0], 4)}, ${num(g.macro_f1.ci95[1], 4)}]` : "—";
    const btn = isAdmin && !v.current
      ? el("button", { class: "action secondary", "data-promote": v.version, onclick: () => act("/ui/api/promote", { version: v.version }) }, `Promote ${v.version}`)
      : v.current ? el("strong", {}, "current") : "";
    return [v.version, when(v.created), v.family, num(v.cv_macro_f1, 4), gate, btn];
  });
  const gated = data.versions.filter((v) => v.gate && v.gate.per_class);
  const gates = gated.map((v, i) =>
    el("details", { open: i === gated.length - 1, id: `gate-${v.version}` }, el("summary", {}, `${v.version}: gate table (${v.gate.decision})`),
      table(["label", v.gate.against, v.version, "change [95%]"],
        Object.entries(v.gate.per_class).map(([l, c]) => [l + (c.new ? " (new)" : ""), num(c.current, 4), num(c.candidate, 4),
          `${num(c.candidate - c.current, 4)}` + (c.ci95 ? ` [${num(c.ci95[0], 3)}, ${num(c.ci95[1], 3)}]` : "")])),
      el("ul", {}, (v.gate.reasons || []).map((r) => el("li", {}, r)))));
  const job = data.job;
  const jobText = job.state === "idle" ? "No retrain run from here yet." :
    job.state === "running" ? `Retraining on ${job.rows} rows…\n` + job.progress.join("\n") :
    job.state === "failed" ? `Retrain failed: ${job.error}` :
    `Retrain ${job.result.decision}: ${job.result.candidate} vs ${job.result.current}, macro-F1 ${num(job.result.gate.macro_f1.current, 4)} → ${num(job.result.gate.macro_f1.candidate, 4)}` +
      (job.result.reasons.length ? "\n" + job.result.reasons.join("\n") : "");
  main.replaceChildren(
    el("section", {}, el("h2", {}, `Registry ${data.registry} · current ${data.current}`),
      table(["version", "created", "family", "CV macro-F1", "gate", ""], rows, { id: "versions-table" })),
    el("section", {}, gates),
    isAdmin ? el("section", {},
      el("button", { class: "action", id: "rollback", disabled: !data.can_rollback, onclick: () => act("/ui/api/rollback", {}) }, "Roll back"), " ",
      el("button", { class: "action", id: "retrain", disabled: job.state === "running", onclick: () => act("/ui/api/retrain", {}) }, "Retrain now")) :
      el("p", { class: "muted" }, "Read-only: promote, roll back and retrain need an admin."),
    el("section", {}, el("h2", {}, "Retrain"), el("div", { class: "progress", id: "job" }, jobText)),
  );
  if (job.state === "running") setTimeout(models, 1500);
}

async function act(path, body) {
  try {
    const r = await api(path, body);
    toast(r.status ? `${r.status.replace("_", " ")}: ${r.version || ""}` : "retrain started", false);
  } catch (e) {
    toast(e.message, true);
  }
  await models();
}

// ---------------------------------------------------------------- start
if (page === "overview") { overview(); setInterval(overview, 3000); }
if (page === "review") { renderReview({ total: 0, disagreed: 0, rejected: 0, unsure: 0, reviewed: 0 }); loadReview(); document.addEventListener("keydown", reviewKeys); }
if (page === "models") { models(); }
