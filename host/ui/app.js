// aiclient web UI: talks to the management API with the session token from /api/login and
// refreshes what changed when /api/events says so. No framework, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("aiclient-token") || "";
let events = null;

async function api(method, path, body) {
  const res = await fetch(path, {
    method,
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (res.status === 401 && path !== "/api/login") { logout(); throw new Error("session expired"); }
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(data.message || (data.error && data.error.message) || `HTTP ${res.status}`);
  return data;
}

function show(view) {
  $("login-view").hidden = view !== "login";
  $("app-view").hidden = view !== "app";
}

function logout() {
  if (token) fetch("/api/logout", { method: "POST", headers: { authorization: `Bearer ${token}` } }).catch(() => {});
  token = "";
  sessionStorage.removeItem("aiclient-token");
  if (events) events.close();
  show("login");
}

$("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("login-error").textContent = "";
  try {
    const r = await api("POST", "/api/login", { password: $("password").value });
    token = r.token;
    sessionStorage.setItem("aiclient-token", token);
    $("password").value = "";
    start();
  } catch (err) {
    $("login-error").textContent = err.message;
  }
});
$("logout").addEventListener("click", logout);

document.querySelectorAll(".tab").forEach((b) => b.addEventListener("click", () => {
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t === b));
  document.querySelectorAll(".panel").forEach((p) => { p.hidden = p.id !== `tab-${b.dataset.tab}`; });
  ({ pools: loadPools, plugins: loadPlugins, config: loadConfig, storage: loadStorage })[b.dataset.tab]();
}));

function text(el, s) { el.textContent = s == null ? "" : String(s); return el; }
function cell(row, s, cls) { const td = row.insertCell(); text(td, s); if (cls) td.className = cls; return td; }
function button(label, onClick, testId) {
  const b = document.createElement("button");
  b.textContent = label;
  if (testId) b.dataset.test = testId;
  b.addEventListener("click", onClick);
  return b;
}

// Which loaded provider plugins serve a provider type, and whether any of them is enabled:
// a pool whose plugins are all disabled (or that no loaded plugin serves) serves nothing.
function servingOf(plugins) {
  const by = new Map();
  for (const p of plugins) {
    if (p.kind === "storage") continue;
    for (const t of p.providerTypes || []) {
      if (!by.has(t)) by.set(t, []);
      by.get(t).push(p);
    }
  }
  return by;
}

async function loadPools() {
  const [pools, { plugins }] = await Promise.all([api("GET", "/api/providers"), api("GET", "/api/plugins")]);
  const serving = servingOf(plugins || []);
  const root = $("pools");
  root.replaceChildren();
  const types = Object.keys(pools).sort();
  const known = [...new Set([...types, ...serving.keys()])].sort();
  $("known-types").replaceChildren(...known.map((t) => Object.assign(document.createElement("option"), { value: t })));
  if (types.length === 0) root.append(text(document.createElement("p"), "No accounts yet."));
  for (const type of types) {
    const card = document.createElement("div");
    card.className = "card pool";
    card.dataset.type = type;
    const accounts = pools[type];
    const healthy = accounts.filter((a) => a.isHealthy !== false && !a.isDisabled).length;
    const head = text(document.createElement("h2"), `${type} — ${healthy}/${accounts.length} healthy`);
    const servers = serving.get(type) || [];
    if (!servers.some((p) => p.enabled)) {
      const why = servers.length === 0 ? "no loaded plugin serves this type"
        : `plugin ${servers.map((p) => p.name).join(", ")} disabled`;
      card.classList.add("off");
      const badge = text(document.createElement("span"), `not serving: ${why}`);
      badge.className = "badge";
      badge.dataset.test = "pool-state";
      head.append(" ", badge);
    }
    card.append(head);
    const table = document.createElement("table");
    table.createTHead().insertRow().append(...["Name", "UUID", "Status", "Usage", "Errors", "Last used", "Last error", ""].map((h) => text(document.createElement("th"), h)));
    const body = table.createTBody();
    for (const a of accounts) {
      const row = body.insertRow();
      row.dataset.uuid = a.uuid;
      const status = a.isDisabled ? "disabled" : a.isHealthy === false ? "unhealthy" : "healthy";
      cell(row, a.customName || "");
      cell(row, a.uuid);
      cell(row, status, status).dataset.test = "status";
      cell(row, a.usageCount ?? 0, "num").dataset.test = "usage";
      cell(row, a.errorCount ?? 0, "num").dataset.test = "errors";
      cell(row, a.lastUsed || "");
      cell(row, a.lastErrorMessage || "");
      const actions = row.insertCell();
      actions.append(
        button(a.isDisabled ? "Enable" : "Disable", () => act(api("POST", `/api/providers/${enc(type)}/${enc(a.uuid)}/${a.isDisabled ? "enable" : "disable"}`)), "toggle"),
        " ",
        button("Edit", () => edit(type, a), "edit"),
        " ",
        button("Delete", () => { if (confirm(`Delete ${a.uuid}?`)) act(api("DELETE", `/api/providers/${enc(type)}/${enc(a.uuid)}`)); }, "delete"),
      );
    }
    card.append(table);
    card.append(button("Reset health", () => act(api("POST", `/api/providers/${enc(type)}/reset-health`))), " ",
      button("Check unhealthy", () => act(api("POST", `/api/providers/${enc(type)}/health-check`))));
    root.append(card);
  }
}

const enc = encodeURIComponent;
async function act(p) { try { await p; } catch (e) { alert(e.message); } await loadPools(); }

function edit(type, a) {
  const cfg = { ...a };
  for (const k of ["uuid", "usageCount", "errorCount", "refreshCount", "isHealthy", "needsRefresh", "lastUsed", "lastErrorTime", "lastErrorMessage", "scheduledRecoveryTime", "lastHealthCheckTime", "lastHealthCheckModel"]) delete cfg[k];
  $("edit-uuid").textContent = a.uuid;
  $("edit-config").value = JSON.stringify(cfg, null, 2);
  $("edit-error").textContent = "";
  const dlg = $("edit-dialog");
  // A dialog keeps the last returnValue when closed with Escape: without this, Escape after an
  // earlier Save would save the discarded edit.
  dlg.returnValue = "";
  dlg.onclose = async () => {
    if (dlg.returnValue !== "save") return;
    try {
      await api("PUT", `/api/providers/${enc(type)}/${enc(a.uuid)}`, { providerConfig: JSON.parse($("edit-config").value) });
      await loadPools();
    } catch (e) { alert(e.message); }
  };
  dlg.showModal();
}

$("add-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("add-error").textContent = "";
  $("add-msg").textContent = "";
  try {
    const r = await api("POST", "/api/providers", { providerType: $("add-type").value.trim(), providerConfig: JSON.parse($("add-config").value) });
    $("add-msg").textContent = `Added ${r.providerType} account ${r.provider.customName || r.provider.uuid}.`;
    $("add-config").value = $("add-config").defaultValue;
    await loadPools();
  } catch (err) {
    $("add-error").textContent = err.message;
  }
});

async function loadPlugins() {
  const { plugins } = await api("GET", "/api/plugins");
  const body = $("plugins");
  body.replaceChildren();
  for (const p of plugins) {
    const row = body.insertRow();
    row.dataset.plugin = p.name;
    cell(row, p.name);
    cell(row, p.kind);
    cell(row, (p.providerTypes || []).join(", "));
    cell(row, p.version);
    const c = row.insertCell();
    if (p.kind === "storage") { text(c, "active"); continue; }
    const box = Object.assign(document.createElement("input"), { type: "checkbox", checked: p.enabled });
    box.dataset.test = "plugin-toggle";
    box.addEventListener("change", async () => {
      try { await api("POST", `/api/plugins/${enc(p.name)}/toggle`, { enabled: box.checked }); } catch (e) { alert(e.message); }
      await loadPlugins();
    });
    c.append(box);
  }
}

async function loadConfig() {
  const cfg = await api("GET", "/api/config");
  delete cfg.hasApiKey;
  $("config-text").value = JSON.stringify(cfg, null, 2);
  $("config-msg").textContent = "";
}

$("config-save").addEventListener("click", async () => {
  try {
    await api("POST", "/api/config", JSON.parse($("config-text").value));
    $("config-msg").textContent = "Saved.";
  } catch (e) {
    $("config-msg").textContent = e.message;
  }
});

async function loadStorage() {
  const [storage, redis] = await Promise.all([api("GET", "/api/storage/status"), api("GET", "/api/redis/status")]);
  $("storage-status").textContent = JSON.stringify({ storage, redis }, null, 2);
}

let refreshTimer = null;
function soon(fn) { clearTimeout(refreshTimer); refreshTimer = setTimeout(fn, 250); }

function listen() {
  if (events) events.close();
  events = new EventSource(`/api/events?token=${enc(token)}`);
  events.onopen = () => { $("live").classList.add("on"); $("live").textContent = "● live"; };
  events.onerror = () => { $("live").classList.remove("on"); $("live").textContent = "● offline"; };
  events.addEventListener("provider_update", () => { if (!$("tab-pools").hidden) soon(loadPools); });
  // The pools view shows which pools a disabled plugin leaves unserved.
  events.addEventListener("plugin_update", () => {
    if (!$("tab-plugins").hidden) soon(loadPlugins);
    if (!$("tab-pools").hidden) soon(loadPools);
  });
  events.addEventListener("config_update", () => { if (!$("tab-config").hidden) soon(loadConfig); });
}

async function start() {
  show("app");
  try {
    await loadPools();
    listen();
  } catch (e) {
    if (token) $("pools").textContent = e.message;
  }
}

if (token) start(); else show("login");
