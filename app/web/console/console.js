// roi-relay console: ROI templates (list, create, edit, delete) and live streams.
// Plain browser JavaScript, no build step. The server owns every rule: this page sends what
// the operator typed and shows the server's rule messages next to the fields.
"use strict";

const API = "/api/v1";
const TOKEN_KEY = "roi-relay.api-token";
const PREFIX = "roi";
const FIELDS = ["name", "description", "model", "delta_qp", "max_regions", "bitrate_kbps"];
const FIELD_LABELS = {
  description: "description",
  model: "model",
  delta_qp: "ΔQP",
  max_regions: "regions",
  bitrate_kbps: "bitrate",
};
const TEMPLATE_REFRESH_MS = 10000;
const STREAM_REFRESH_MS = 3000;

const state = {
  // Where OBS pushes (GET /healthz tells the RTMP port and whether pushes must be signed).
  push: { rtmpPort: 1935, signed: false },
  templates: [],
  editing: null, // the template being edited, or null when creating
  reloadQueued: false,
};

const $ = (selector) => document.querySelector(selector);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function token() {
  return localStorage.getItem(TOKEN_KEY) || "";
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const bearer = token();
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  let response;
  try {
    response = await fetch(API + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    return { status: 0, ok: false, data: { detail: `cannot reach the relay: ${error.message}` } };
  }
  let data = null;
  if (response.status !== 204) {
    try {
      data = await response.json();
    } catch {
      data = null;
    }
  }
  return { status: response.status, ok: response.ok, data };
}

function showMessage(text, kind = "info") {
  const box = $("#message");
  box.textContent = text;
  box.className = `message ${kind}`;
  box.hidden = !text;
}

function detailText(data, fallback) {
  if (data && typeof data.detail === "string") return data.detail;
  return fallback;
}

function authProblem(result) {
  if (result.status !== 401) return false;
  showMessage(`${detailText(result.data, "unauthorized")} — enter the API token above.`, "error");
  return true;
}

function plural(count, noun) {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}

// --- time -------------------------------------------------------------------------------

function clock(seconds) {
  const total = Math.max(0, Math.ceil(seconds));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

// The server says how many seconds remain (effective_in_s), which keeps the countdown right
// whatever the browser's clock says; the deadline is kept on the page's monotonic clock.
function countdown(effectiveInS, effectiveAt) {
  return el("span", {
    class: "countdown",
    title: `takes effect at ${new Date(effectiveAt).toLocaleString()}`,
    dataset: { deadline: String(performance.now() + effectiveInS * 1000) },
  });
}

function tick() {
  let due = false;
  for (const node of document.querySelectorAll(".countdown")) {
    const left = (Number(node.dataset.deadline) - performance.now()) / 1000;
    node.textContent = left > 0 ? `in ${clock(left)}` : "now";
    if (left <= 0) due = true;
  }
  if (due && !state.reloadQueued) {
    state.reloadQueued = true;
    setTimeout(loadTemplates, 300);
  }
}

// --- templates --------------------------------------------------------------------------

function describeBitrate(kbps) {
  return kbps === null || kbps === undefined ? "publisher's" : `${kbps} kbps`;
}

function pendingSummary(current, pending) {
  const changes = [];
  for (const [field, label] of Object.entries(FIELD_LABELS)) {
    if (current[field] === pending[field]) continue;
    const show = (v) => (field === "bitrate_kbps" ? describeBitrate(v) : v === "" ? "—" : v);
    changes.push(`${label} ${show(current[field])} → ${show(pending[field])}`);
  }
  return changes.length ? changes.join(", ") : "no change";
}

async function loadPushInfo() {
  try {
    const response = await fetch("/healthz");
    if (!response.ok) return;
    const health = await response.json();
    if (Number.isInteger(health.rtmp_port)) state.push.rtmpPort = health.rtmp_port;
    state.push.signed = Boolean(health.push_auth);
    renderTemplates();
  } catch {
    // an older relay or a proxy that hides /healthz: keep the defaults
  }
}

// Clipboard API where the page is a secure context (localhost, https); otherwise the old way.
async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const area = el("textarea", { class: "offscreen" }, text);
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  button.textContent = "Copied";
  setTimeout(() => (button.textContent = "Copy"), 1500);
}

function copyLine(label, text) {
  const button = el("button", { type: "button", class: "copy", title: `Copy the ${label}` }, "Copy");
  button.addEventListener("click", () => copyText(text, button));
  return el("div", { class: "obs-line" }, el("span", { class: "obs-label" }, label), el("code", {}, text), button);
}

// What to type into OBS (Settings → Stream, Service "Custom...") to push with this template.
function obsCell(template) {
  const server = `rtmp://${location.hostname}:${state.push.rtmpPort}/live`;
  let key = `mystream?roirecognition=${template.name}`;
  if (state.push.signed) key += "&txSecret=…&txTime=…";
  return el("td", { class: "obs" }, copyLine("Server", server), copyLine("Stream Key", key));
}

function templateRow(template) {
  const statusCell = el(
    "td",
    { class: "status" },
    el("span", { class: `badge ${template.status}` }, template.status),
  );
  if (template.status === "pending") {
    statusCell.append(" ", countdown(template.effective_in_s, template.effective_at));
  }
  const pendingCell = el("td", { class: "pending" });
  if (template.pending) {
    pendingCell.append(
      el("span", { class: "badge pending" }, `v${template.pending.version}`),
      " ",
      pendingSummary(template, template.pending),
      " ",
      countdown(template.pending.effective_in_s, template.pending.effective_at),
    );
  }
  return el(
    "tr",
    { dataset: { name: template.name } },
    el("td", {}, el("code", {}, template.name)),
    statusCell,
    el("td", {}, template.model),
    el("td", { class: "description" }, template.description || "—"),
    el("td", { class: "num" }, template.delta_qp),
    el("td", { class: "num" }, template.max_regions),
    el("td", {}, describeBitrate(template.bitrate_kbps)),
    pendingCell,
    obsCell(template),
    el(
      "td",
      { class: "row-actions" },
      el("button", { type: "button", class: "edit", onclick: () => openEditor(template) }, "Edit"),
      el(
        "button",
        { type: "button", class: "delete danger", onclick: () => deleteTemplate(template) },
        "Delete",
      ),
    ),
  );
}

function renderTemplates() {
  const body = $("#templates tbody");
  body.replaceChildren(...state.templates.map(templateRow));
  $("#templates-empty").hidden = state.templates.length > 0;
  tick();
}

async function loadTemplates() {
  state.reloadQueued = false;
  const result = await api("GET", "/roi-templates");
  if (authProblem(result)) return;
  if (!result.ok) {
    showMessage(detailText(result.data, `listing templates failed (${result.status})`), "error");
    return;
  }
  state.templates = result.data;
  renderTemplates();
}

// --- editor -----------------------------------------------------------------------------

function input(field) {
  return $(`#field-${field}`);
}

function clearErrors() {
  for (const node of document.querySelectorAll(".error")) node.textContent = "";
  for (const node of document.querySelectorAll(".rule")) node.hidden = false;
  for (const field of FIELDS) input(field).removeAttribute("aria-invalid");
}

// The server's message names the rule the hint under the field already states: show it once.
function hideRepeatedHint(field) {
  const hint = document.querySelector(`[data-rule-for="${field}"]`);
  const error = $(`#error-${field}`).textContent;
  if (hint && hint.textContent && error && (hint.textContent.includes(error) || error.includes(hint.textContent))) {
    hint.hidden = true;
  }
}

function showErrors(detail) {
  clearErrors();
  const entries = Array.isArray(detail) ? detail : [{ field: null, msg: String(detail) }];
  for (const entry of entries) {
    const field = FIELDS.includes(entry.field) ? entry.field : null;
    const box = field ? $(`#error-${field}`) : $("#error-form");
    const msg = formWording(String(entry.msg));
    box.textContent = box.textContent ? `${box.textContent}; ${msg}` : msg;
    if (field) input(field).setAttribute("aria-invalid", "true");
  }
  for (const field of FIELDS) hideRepeatedHint(field);
}

function openEditor(template) {
  state.editing = template;
  clearErrors();
  const source = template ? template.pending || template : null;
  $("#editor-title").textContent = template ? `Edit ${template.name}` : "New template";
  $("#save-template").textContent = template ? "Save (takes effect after the delay)" : "Create";
  input("name").value = template ? template.name.slice(PREFIX.length) : "";
  input("name").disabled = Boolean(template);
  // An absent value (null: the publisher's bitrate; no description) is an empty field.
  const shown = (value) => (value === null || value === undefined ? "" : String(value));
  input("description").value = shown(source && source.description);
  const select = input("model");
  select.value = source ? source.model : select.dataset.default || select.options[0].value;
  input("delta_qp").value = shown(source && source.delta_qp);
  input("max_regions").value = shown(source && source.max_regions);
  input("bitrate_kbps").value = shown(source && source.bitrate_kbps);
  $("#editor").hidden = false;
  (template ? input("description") : input("name")).focus();
}

function closeEditor() {
  state.editing = null;
  $("#editor").hidden = true;
  clearErrors();
}

// A number when the text is one; otherwise the text itself, so the server names the rule.
function numberOrText(text) {
  const trimmed = text.trim();
  const number = Number(trimmed);
  return trimmed !== "" && Number.isFinite(number) ? number : text;
}

function formBody(creating) {
  const body = {};
  if (creating) body.name = input("name").value;
  body.description = input("description").value;
  body.model = input("model").value;
  for (const field of ["delta_qp", "max_regions"]) {
    const text = input(field).value;
    if (text.trim() !== "") body[field] = numberOrText(text);
  }
  const bitrate = input("bitrate_kbps").value;
  if (bitrate.trim() !== "") body.bitrate_kbps = numberOrText(bitrate);
  else if (!creating) body.bitrate_kbps = null;
  return body;
}

async function saveTemplate(event) {
  event.preventDefault();
  const editing = state.editing;
  const result = editing
    ? await api("PATCH", `/roi-templates/${encodeURIComponent(editing.name)}`, formBody(false))
    : await api("POST", "/roi-templates", formBody(true));
  if (authProblem(result)) return;
  if (result.status === 422) {
    showErrors(result.data && result.data.detail);
    return;
  }
  if (result.status === 409) {
    showErrors([{ field: "name", msg: detailText(result.data, "this name is taken") }]);
    return;
  }
  if (!result.ok) {
    showErrors([{ field: null, msg: detailText(result.data, `failed (${result.status})`) }]);
    if (result.status === 404) await loadTemplates();
    return;
  }
  const saved = result.data;
  closeEditor();
  const when = saved.pending || (saved.status === "pending" ? saved : null);
  const said = when
    ? `${saved.name} saved; it takes effect in ${clock(when.effective_in_s)}.`
    : `${saved.name} saved.`;
  const warnings = Array.isArray(saved.warnings) ? saved.warnings : [];
  // A warning is worth more than the plain "saved": show it in its place.
  showMessage(warnings.length ? `${said} Note: ${warnings.join(" ")}` : said, warnings.length ? "warn" : "ok");
  await loadTemplates();
}

async function deleteTemplate(template) {
  const question = `Delete ${template.name}? Streams using it stop ROI encoding at once.`;
  if (!window.confirm(question)) return;
  const result = await api("DELETE", `/roi-templates/${encodeURIComponent(template.name)}`);
  if (authProblem(result)) return;
  if (!result.ok && result.status !== 404) {
    showMessage(detailText(result.data, `deleting failed (${result.status})`), "error");
    return;
  }
  if (state.editing && state.editing.name === template.name) closeEditor();
  showMessage(`${template.name} deleted.`, "ok");
  await loadTemplates();
}

// The API's wording for an absent bitrate is JSON's null; in the form it is an empty field.
function formWording(rule) {
  return rule.replace(/,? or null to keep/, "; leave it empty to keep");
}

// The rules live on the server; the OpenAPI document carries their wording, the models and
// the defaults, so the form shows them without keeping a copy here.
async function loadRules() {
  let schema;
  try {
    const response = await fetch("/openapi.json");
    if (!response.ok) return;
    schema = (await response.json()).components.schemas.TemplateCreate.properties;
  } catch {
    return;
  }
  for (const [field, rule] of Object.entries(schema)) {
    const hint = document.querySelector(`[data-rule-for="${field}"]`);
    if (hint && rule.description) hint.textContent = formWording(rule.description);
    const box = document.getElementById(`field-${field}`);
    if (box && box.tagName === "INPUT" && typeof rule.default === "number") {
      box.placeholder = String(rule.default);
    }
  }
  const models = schema.model && schema.model.enum;
  if (Array.isArray(models) && models.length) {
    const select = input("model");
    const chosen = select.value;
    select.replaceChildren(...models.map((name) => el("option", { value: name }, name)));
    select.dataset.default = schema.model.default || models[0];
    select.value = models.includes(chosen) ? chosen : select.dataset.default;
  }
}

// --- live streams -----------------------------------------------------------------------

function roiState(roi) {
  if (!roi) return el("span", { class: "muted" }, "—");
  if (roi.applied) {
    const parts = [roi.model, plural(roi.regions ?? 0, "region")];
    if (roi.lag_ms !== null && roi.lag_ms !== undefined) parts.push(`lag ${roi.lag_ms} ms`);
    const text = parts.filter(Boolean).join(", ");
    return el("span", {}, el("span", { class: "badge active" }, "ROI on"), " ", text);
  }
  return el(
    "span",
    {},
    el("span", { class: "badge off" }, "off"),
    " ",
    roi.reason || "no template",
  );
}

function streamRow(stream) {
  const path = `${encodeURIComponent(stream.app)}/${encodeURIComponent(stream.stream)}`;
  const video = [
    stream.codec || "—",
    stream.width && stream.height ? `${stream.width}×${stream.height}` : null,
    stream.fps ? `${stream.fps} fps` : null,
  ]
    .filter(Boolean)
    .join(" ");
  return el(
    "tr",
    { dataset: { stream: `${stream.app}/${stream.stream}` } },
    el("td", {}, el("code", {}, `${stream.app}/${stream.stream}`)),
    el("td", {}, video),
    el("td", { class: "num" }, stream.bitrate_kbps != null ? `${stream.bitrate_kbps} kbps` : "—"),
    el("td", { class: "num" }, stream.players ?? 0),
    el("td", { class: "num" }, clock(stream.uptime_s || 0)),
    el("td", {}, stream.template ? el("code", {}, stream.template) : "—"),
    el("td", {}, roiState(stream.roi)),
    el("td", {}, el("a", { href: `/play/${path}`, target: "_blank" }, "Play")),
  );
}

async function loadStreams() {
  const result = await api("GET", "/streams");
  const empty = $("#streams-empty");
  const body = $("#streams tbody");
  let rows = [];
  if (result.status === 404) {
    empty.textContent = "This relay does not report live streams yet.";
  } else if (result.status === 401) {
    empty.textContent = "Enter the API token to see live streams.";
  } else if (!result.ok || !Array.isArray(result.data)) {
    empty.textContent = detailText(result.data, `Live streams unavailable (${result.status}).`);
  } else {
    rows = result.data.map(streamRow);
    empty.textContent = "No live streams.";
  }
  body.replaceChildren(...rows);
  empty.hidden = rows.length > 0;
}

// --- start ------------------------------------------------------------------------------

function start() {
  input("name").parentElement.querySelector("span").textContent = PREFIX;
  $("#api-token").value = token();
  $("#token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("#api-token").value.trim();
    if (value) localStorage.setItem(TOKEN_KEY, value);
    else localStorage.removeItem(TOKEN_KEY);
    showMessage(value ? "API token saved in this browser." : "API token cleared.", "ok");
    loadTemplates();
    loadStreams();
  });
  $("#new-template").addEventListener("click", () => openEditor(null));
  $("#cancel-edit").addEventListener("click", closeEditor);
  $("#template-form").addEventListener("submit", saveTemplate);
  loadRules();
  loadPushInfo();
  loadTemplates();
  loadStreams();
  setInterval(tick, 1000);
  setInterval(loadTemplates, TEMPLATE_REFRESH_MS);
  setInterval(loadStreams, STREAM_REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", start);
