// Sluicegate's dashboard: read-only views over the admin port's JSON API,
// refreshed every second. Plain DOM code, no framework and no external
// asset: every text from the API is set with textContent, never parsed as
// HTML.
"use strict";

const VIEWS = ["routes", "certificates", "upstreams", "live", "explain"];
const REFRESH_MS = 1000;
const HISTORY = 60;

const state = {
  view: "routes",
  filter: "",
  explain: null,
  // Requests per second by route, for the trend lines.
  history: new Map(),
  timer: null,
};

function $(id) { return document.getElementById(id); }

// el("td", {class: "num"}, "text", childNode, ...)
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function chip(text) { return el("span", { class: "chip" }, text); }
function badge(kind, text) { return el("span", { class: "badge " + kind }, text); }

async function api(path) {
  const resp = await fetch(path, { cache: "no-store", credentials: "same-origin" });
  if (resp.status === 401) throw new Error("This admin port asks for a token (--admin-token): reload the page and sign in with any user name and the token as password.");
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(body.error || ("HTTP " + resp.status));
  return body;
}

function notice(text) {
  const n = $("notice");
  n.hidden = !text;
  n.textContent = text || "";
}

function fmtMs(ms) {
  if (ms === undefined || ms === null) return "–";
  if (ms < 1) return Math.round(ms * 1000) + " µs";
  if (ms < 100) return ms.toFixed(1) + " ms";
  return Math.round(ms) + " ms";
}

function fmtRate(r) { return r >= 100 ? Math.round(r).toString() : r.toFixed(1); }
function fmtPct(x) { return (x * 100).toFixed(x > 0 && x < 0.01 ? 2 : 1) + " %"; }

function fmtAgo(unixSeconds) {
  const s = Math.max(0, Math.round(Date.now() / 1000 - unixSeconds));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  return Math.round(s / 3600) + " h ago";
}

function fill(tbody, rows, columns, emptyText) {
  tbody.replaceChildren(...rows);
  if (rows.length === 0) {
    tbody.append(el("tr", {}, el("td", { class: "empty", colSpan: columns }, emptyText)));
  }
  applyFilter();
}

// ---- header ---------------------------------------------------------------

async function loadSummary() {
  const s = await api("/api/summary");
  const pills = [
    el("span", { class: s.ready ? "ok" : "bad" }, s.ready ? "ready" : "not ready"),
    el("span", {}, "generation " + s.generation),
    el("span", {}, "applied " + (s.appliedAt ? fmtAgo(s.appliedAt) : "never")),
    el("span", {}, s.routes + " routes"),
  ];
  if (s.errors) pills.push(el("span", { class: "bad" }, s.errors + " errors"));
  if (s.warnings) pills.push(el("span", { class: "warn" }, s.warnings + " warnings"));
  pills.push(el("span", {}, "v" + s.version));
  $("status").replaceChildren(...pills);
}

// ---- routes ---------------------------------------------------------------

function pathText(p) {
  return (p.type === "Exact" ? "= " : p.type === "Prefix" ? "" : "~ ") + p.value;
}

async function loadRoutes() {
  const data = await api("/api/routes");
  $("routes-count").textContent = data.routes.length + " in generation " + data.generation;
  const rows = data.routes.map((r) => {
    const diags = r.diagnostics.map((d) =>
      el("div", { class: "diag " + d.severity.toLowerCase() }, (d.field ? d.field + ": " : "") + d.message));
    const status = diags.length === 0 ? badge("ok", "OK")
      : badge(r.diagnostics.some((d) => d.severity === "Error") ? "bad" : "warn", diags.length + " finding" + (diags.length > 1 ? "s" : ""));
    const match = [];
    if (r.methods.length) match.push(chip(r.methods.join("|")));
    for (const c of r.conditions) match.push(chip(c));
    if (r.priority) match.push(chip("priority " + r.priority));
    if (r.fallback) match.push(chip("fallback"));
    return el("tr", { "data-route": r.name },
      el("td", { class: "mono" }, r.name),
      el("td", {}, r.source),
      el("td", {}, r.hosts.length ? r.hosts.map(chip) : chip("any host")),
      el("td", { class: "mono" }, r.paths.map((p) => el("div", {}, pathText(p))), match),
      el("td", {}, r.plugins.map(chip)),
      el("td", { class: "mono" }, r.backends.map((b) => el("div", {}, b.upstream + (r.backends.length > 1 ? " ×" + b.weight : "")))),
      el("td", {}, status, diags));
  });
  fill($("routes-rows"), rows, 7, "No routes.");
  const problems = data.diagnostics.map((d) => el("tr", {},
    el("td", {}, badge(d.severity === "Error" ? "bad" : "warn", d.severity)),
    el("td", {}, d.object), el("td", { class: "mono" }, d.field), el("td", {}, d.reason), el("td", {}, d.message)));
  for (const i of data.sourceIssues) {
    problems.push(el("tr", {},
      el("td", {}, badge(i.severity === "Error" ? "bad" : "warn", i.severity)),
      el("td", {}, i.file), el("td", {}), el("td", {}, "SourceFile"), el("td", {}, i.message)));
  }
  $("problems-count").textContent = problems.length ? String(problems.length) : "none";
  fill($("problems-rows"), problems, 5, "The configuration has no problems.");
}

// ---- certificates ---------------------------------------------------------

async function loadCertificates() {
  const data = await api("/api/certificates");
  const rows = data.certificates.map((c) => {
    let expires = badge("muted", "unknown");
    if (c.expiresInDays !== null && c.expiresInDays !== undefined) {
      const d = c.expiresInDays;
      const kind = d < 0 ? "bad" : d < 14 ? "bad" : d < 30 ? "warn" : "ok";
      expires = badge(kind, d < 0 ? "expired" : Math.floor(d) + " days");
    }
    return el("tr", { "data-secret": c.secret },
      el("td", {}, c.default ? chip("default certificate") : c.hosts.map(chip)),
      el("td", { class: "mono" }, c.secret),
      el("td", {}, c.source),
      el("td", { class: "mono" }, c.subject || ""),
      el("td", {}, c.notAfter ? new Date(c.notAfter * 1000).toISOString().replace(".000Z", "Z") : "–"),
      el("td", {}, expires));
  });
  fill($("certs-rows"), rows, 6, "No certificates: HTTPS clients get a self-signed one.");
  const auth = data.clientAuth.map((a) => el("tr", {},
    el("td", {}, a.hosts.map(chip)), el("td", { class: "mono" }, a.caSecret),
    el("td", {}, a.optional ? "yes" : "no"), el("td", {}, a.source)));
  fill($("client-auth-rows"), auth, 4, "No host asks for client certificates.");
  const problems = data.problems.map((d) => el("tr", {},
    el("td", {}, d.object), el("td", { class: "mono" }, d.field), el("td", {}, d.message)));
  fill($("cert-problems-rows"), problems, 3, "None.");
}

// ---- upstreams ------------------------------------------------------------

function endpointRow(e) {
  const flags = [];
  if (e.terminating) flags.push(badge("muted", "terminating"));
  if (e.ejected) flags.push(badge("bad", "ejected"));
  if (e.failingActiveChecks) flags.push(badge("bad", "failing checks"));
  return el("tr", { "data-endpoint": e.address },
    el("td", { class: "mono" }, e.address),
    el("td", {}, e.healthy ? badge("ok", "healthy") : badge("bad", "unavailable"), " ", flags),
    el("td", { class: "num in-flight" }, e.inFlight),
    el("td", { class: "num" }, e.latencyMs === undefined ? "–" : fmtMs(e.latencyMs)));
}

async function loadUpstreams() {
  const data = await api("/api/upstreams");
  $("upstreams-count").textContent = String(data.upstreams.length);
  const cards = data.upstreams.map((u) => {
    const health = u.total === 0 ? badge("bad", "no endpoints")
      : badge(u.healthy === u.total ? "ok" : u.healthy ? "warn" : "bad", u.healthy + "/" + u.total + " healthy");
    const meta = ["in flight " + u.inFlight];
    if (u.dns) meta.push("resolved from " + u.dns.name + ":" + u.dns.port);
    if (u.routes.length) meta.push("routes: " + u.routes.join(", "));
    const table = el("table", { class: "grid" },
      el("thead", {}, el("tr", {}, el("th", {}, "Endpoint"), el("th", {}, "State"), el("th", { class: "num" }, "In flight"), el("th", { class: "num" }, "EWMA latency"))),
      el("tbody", {}, u.endpoints.length ? u.endpoints.map(endpointRow)
        : el("tr", {}, el("td", { class: "empty", colSpan: 4 }, "No endpoints: requests get 503."))));
    return el("div", { class: "card filterable", "data-upstream": u.key },
      el("h3", { class: "mono" }, u.key, " ", health),
      el("div", { class: "meta" }, meta.join(" · ")),
      table);
  });
  $("upstreams-list").replaceChildren(...cards);
  if (cards.length === 0) $("upstreams-list").append(el("p", { class: "hint" }, "No upstreams."));
  applyFilter();
}

// ---- live -----------------------------------------------------------------

function sparkline(values) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", "0 0 " + (HISTORY - 1) + " 20");
  svg.setAttribute("preserveAspectRatio", "none");
  const max = Math.max(1, ...values);
  const start = HISTORY - values.length;
  const points = values.map((v, i) => (start + i) + "," + (19 - (v / max) * 18).toFixed(2)).join(" ");
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", points);
  svg.append(line);
  return svg;
}

async function loadLive() {
  const data = await api("/api/live");
  $("live-window").textContent = "last " + data.windowSeconds.toFixed(1) + " s";
  const seen = new Set();
  const rows = data.routes.map((r) => {
    seen.add(r.route);
    const h = state.history.get(r.route) || [];
    h.push(r.requestsPerSecond);
    if (h.length > HISTORY) h.shift();
    state.history.set(r.route, h);
    const errors = badge(r.errorRate > 0.05 ? "bad" : r.errorRate > 0 ? "warn" : "ok", fmtPct(r.errorRate));
    return el("tr", { "data-route": r.route },
      el("td", { class: "mono" }, r.route),
      el("td", { class: "num rps" }, fmtRate(r.requestsPerSecond)),
      el("td", {}, sparkline(h)),
      el("td", { class: "num errors" }, errors),
      el("td", { class: "num p50" }, fmtMs(r.p50Ms)),
      el("td", { class: "num p99" }, fmtMs(r.p99Ms)),
      el("td", { class: "num" }, r.statuses["2xx"]),
      el("td", { class: "num" }, r.statuses["3xx"]),
      el("td", { class: "num" }, r.statuses["4xx"]),
      el("td", { class: "num" }, r.statuses["5xx"]),
      el("td", { class: "consumers" }, r.topConsumers.map((c) => chip(c.name + " " + c.requests))));
  });
  for (const k of [...state.history.keys()]) if (!seen.has(k)) state.history.delete(k);
  fill($("live-rows"), rows, 11, "No traffic in the last " + data.windowSeconds.toFixed(0) + " s.");
  const plugins = [];
  for (const r of data.routes) {
    for (const p of r.plugins) {
      const answered = p.answered.map((a) => chip((a.status === null ? "other" : a.status) + " ×" + a.count));
      plugins.push(el("tr", { "data-route": r.route, "data-plugin": p.plugin },
        el("td", { class: "mono" }, r.route),
        el("td", {}, p.plugin),
        el("td", { class: "num calls" }, fmtRate(p.callsPerSecond)),
        el("td", { class: "num mean" }, fmtMs(p.meanMs)),
        el("td", { class: "num p99" }, fmtMs(p.p99Ms)),
        el("td", { class: "num" }, p.continued),
        el("td", {}, answered)));
    }
  }
  fill($("plugin-rows"), plugins, 7, "No plugin ran in the window.");
}

// ---- explain --------------------------------------------------------------

const METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"];

// "POST https://shop.example.com/api?x=1 x-canary:1" -> query parameters,
// or null when the text does not name a host and path.
function parseRequest(text) {
  const words = text.trim().split(/\s+/).filter(Boolean);
  if (words.length === 0) return null;
  let method = "GET";
  if (METHODS.includes(words[0].toUpperCase()) && words.length > 1) method = words.shift().toUpperCase();
  let target = words.shift().replace(/^[a-z]+:\/\//i, "");
  const slash = target.indexOf("/");
  if (slash <= 0) return null;
  const params = new URLSearchParams();
  params.set("host", target.slice(0, slash));
  params.set("path", target.slice(slash));
  params.set("method", method);
  for (const w of words) {
    if (!w.includes(":")) return null;
    params.append("header", w);
  }
  return params;
}

function renderExplanation(e) {
  const out = [];
  const req = e.request;
  out.push(el("div", { class: "meta mono" },
    req.method + " " + req.host + req.path + (req.query ? "?" + req.query : "") +
    (req.headers.length ? "  (headers: " + req.headers.join(", ") + ")" : "") +
    "  · generation " + e.generation));
  out.push(el("div", { class: "decided" },
    e.route ? el("span", {}, "Route ", el("strong", { class: "mono", id: "explain-route" }, e.route), " from " + (e.source || "")) : el("strong", { id: "explain-route" }, "No route: 404"),
    el("div", { class: "sub", id: "explain-decided" }, "Decided by: " + e.decidedBy)));
  const cands = e.candidates.map((c) => el("tr", { "data-route": c.route },
    el("td", {}, badge(c.outcome === "chosen" ? "ok" : c.outcome === "lost" ? "muted" : "warn", c.outcome)),
    el("td", { class: "mono" }, c.route),
    el("td", {}, c.host),
    el("td", { class: "mono" }, c.path.type + " " + c.path.value),
    el("td", { class: "num" }, c.priority),
    el("td", {}, c.reason)));
  out.push(el("h2", {}, "Candidates, in the order the router tries them"));
  out.push(el("table", { class: "grid" },
    el("thead", {}, el("tr", {}, ["Outcome", "Route", "Host", "Path", "Priority", "Why"].map((h) => el("th", {}, h)))),
    el("tbody", {}, cands.length ? cands : el("tr", {}, el("td", { class: "empty", colSpan: 6 }, "No route serves this host and path.")))));
  if (e.plugins.length) {
    out.push(el("h2", {}, "Plugins, in execution order"));
    out.push(el("table", { class: "grid" },
      el("thead", {}, el("tr", {}, el("th", {}, "#"), el("th", {}, "Plugin"), el("th", { class: "num" }, "Priority"), el("th", {}, "Settings"))),
      el("tbody", {}, e.plugins.map((p, i) => el("tr", {},
        el("td", {}, i + 1), el("td", {}, p.name), el("td", { class: "num" }, p.priority),
        el("td", { class: "mono" }, JSON.stringify(p.settings)))))));
  }
  for (const b of e.backends) {
    out.push(el("h2", {}, "Upstream ", el("span", { class: "mono" }, b.upstream), el("span", { class: "sub" }, " weight " + b.weight + (b.dns ? " · resolved from " + b.dns.name : ""))));
    out.push(el("table", { class: "grid" },
      el("thead", {}, el("tr", {}, el("th", {}, "Endpoint"), el("th", {}, "State"), el("th", { class: "num" }, "In flight"), el("th", { class: "num" }, "EWMA latency"))),
      el("tbody", {}, b.endpoints.length ? b.endpoints.map(endpointRow)
        : el("tr", {}, el("td", { class: "empty", colSpan: 4 }, "No endpoints: requests get 503.")))));
  }
  return out;
}

async function runExplain(params) {
  state.explain = params;
  try {
    const e = await api("/explain?" + params.toString());
    $("explain-result").replaceChildren(el("div", { class: "card" }, renderExplanation(e)));
  } catch (err) {
    $("explain-result").replaceChildren(el("div", { class: "notice" }, "Cannot explain: " + err.message));
  }
}

// ---- filtering, navigation, refresh ---------------------------------------

function applyFilter() {
  const f = state.filter.toLowerCase();
  const view = $("view-" + state.view);
  if (!view || state.view === "explain") return;
  for (const row of view.querySelectorAll("tbody > tr, .filterable")) {
    if (row.closest(".card") && row.tagName === "TR") continue;
    const hide = f && !row.textContent.toLowerCase().includes(f);
    row.classList.toggle("hidden-row", Boolean(hide));
  }
}

const LOADERS = { routes: loadRoutes, certificates: loadCertificates, upstreams: loadUpstreams, live: loadLive, explain: null };

async function refresh() {
  try {
    await loadSummary();
    const load = LOADERS[state.view];
    if (load) await load();
    notice("");
  } catch (err) {
    notice(err.message);
  }
}

function show(view) {
  if (!VIEWS.includes(view)) view = "routes";
  state.view = view;
  for (const v of VIEWS) $("view-" + v).hidden = v !== view;
  for (const a of document.querySelectorAll("#tabs a")) a.classList.toggle("active", a.dataset.view === view);
  refresh();
}

function start() {
  window.addEventListener("hashchange", () => show(location.hash.slice(1)));
  $("q").addEventListener("input", (ev) => {
    state.filter = ev.target.value.trim();
    applyFilter();
  });
  $("search").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const params = parseRequest($("q").value);
    if (!params) {
      notice("To explain a request, type [METHOD] HOST/PATH [header:value ...], e.g. GET shop.example.com/api/v1");
      return;
    }
    location.hash = "#explain";
    show("explain");
    runExplain(params);
  });
  show(location.hash.slice(1) || "routes");
  state.timer = setInterval(refresh, REFRESH_MS);
}

start();
