// The "Twilio SMS" page: reads the provider's read API (same origin, the viewer's Airflow session
// cookie) and renders it. No framework, no build step; every value is written with textContent.
"use strict";

const API = "../api";
const REFRESH_MS = 30000;
const STATUS_CLASS = {
  delivered: "ok", read: "ok", received: "ok",
  failed: "bad", undelivered: "bad", canceled: "bad",
  sent: "info", sending: "wait", queued: "wait", accepted: "wait", scheduled: "wait", claimed: "wait",
  unknown: "wait",
};

// --- look: follow Airflow's colour mode and font --------------------------------------------------

function parentDocument() {
  try {
    return window.parent !== window ? window.parent.document : null; // same origin inside Airflow's UI
  } catch (err) {
    return null;
  }
}

function airflowDark() {
  const doc = parentDocument();
  if (doc) return doc.documentElement.classList.contains("dark");
  let stored = null;
  try { stored = localStorage.getItem("theme"); } catch (err) { /* storage blocked */ }
  if (stored === "dark" || stored === "light") return stored === "dark";
  return window.matchMedia("(prefers-color-scheme: dark)").matches;
}

function applyLook() {
  document.documentElement.classList.toggle("dark", airflowDark());
  const doc = parentDocument();
  if (doc && doc.body) {
    const font = getComputedStyle(doc.body).fontFamily;
    if (font) document.documentElement.style.setProperty("--font", font);
  }
}

function watchLook() {
  applyLook();
  const doc = parentDocument();
  if (doc) new MutationObserver(applyLook).observe(doc.documentElement, { attributes: true, attributeFilter: ["class"] });
  window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", applyLook);
  window.addEventListener("storage", (event) => { if (event.key === "theme") applyLook(); });
}

// --- helpers --------------------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value; else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const DATE_TIME = { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" };
const TIME_ONLY = { hour: "2-digit", minute: "2-digit", second: "2-digit" };

function timeEl(iso, format) {
  if (!iso) return el("span", { class: "muted" }, "—");
  return el("time", { datetime: iso, title: iso }, new Date(iso).toLocaleString(undefined, format || DATE_TIME));
}

function badge(status) {
  return el("span", { class: `badge ${STATUS_CLASS[status] || ""}`, "data-status": status || "" }, status || "—");
}

function shortSid(sid) {
  return sid ? `${sid.slice(0, 6)}…${sid.slice(-4)}` : "—";
}

function percent(rate) {
  return rate === null || rate === undefined ? "—" : `${(rate * 100).toFixed(1)} %`;
}

class HttpError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

async function getJson(path) {
  const answer = await fetch(`${API}${path}`, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (!answer.ok) {
    let detail = answer.statusText;
    try { detail = (await answer.json()).detail || detail; } catch (err) { /* not JSON */ }
    throw new HttpError(answer.status, typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return answer.json();
}

function fill(tableId, rows, render) {
  const body = document.querySelector(`#${tableId} tbody`);
  body.replaceChildren(...rows.map(render));
  document.getElementById(`${tableId}-empty`).hidden = rows.length > 0;
  document.getElementById(tableId).hidden = rows.length === 0;
}

// --- rendering ------------------------------------------------------------------------------------

function renderSummary(summary) {
  const card = (label, value, cls, key) =>
    el("div", { class: `card ${cls || ""}`, "data-key": key }, el("div", { class: "label" }, label),
       el("div", { class: "value" }, value));
  document.getElementById("summary").replaceChildren(
    card("Messages", summary.total, "", "total"),
    card("Delivered", summary.delivered, "ok", "delivered"),
    card("Failed", summary.failed, summary.failed ? "bad" : "", "failed"),
    card("Pending", summary.pending, "", "pending"),
    card("Delivery rate", percent(summary.delivery_rate), "", "delivery_rate"),
    card("Inbound", summary.inbound, "", "inbound"),
    card("Opt-outs (STOP)", summary.opt_outs, summary.opt_outs ? "bad" : "", "opt_outs"),
  );
  fill("failures", summary.failures_by_error_code, (f) => el("tr", {},
    el("td", { class: "mono" }, f.error_code === null ? "—" : f.error_code),
    el("td", {}, f.meaning || "unknown to this provider: see Twilio's error dictionary"),
    el("td", { class: "num" }, f.count)));
}

function timeline(history) {
  if (!history || history.length === 0) return el("span", { class: "muted" }, "no callbacks yet");
  return el("ol", { class: "timeline" }, ...history.map((h) => el("li", {},
    badge(h.status), h.error_code ? el("span", { class: "mono" }, ` ${h.error_code}`) : null, timeEl(h.received_at, TIME_ONLY))));
}

function task(m) {
  if (!m.dag_id) return el("span", { class: "muted" }, "—");
  const index = m.map_index !== null && m.map_index !== undefined && m.map_index >= 0 ? `[${m.map_index}]` : "";
  return el("span", { class: "mono" }, `${m.dag_id}.${m.task_id || ""}${index}`);
}

// A body the viewer may not read (no read access to its connection), or an outbound text the store did not
// keep ([twilio_sms] store_outbound_bodies off), says so instead of showing text.
function bodyCell(m) {
  if (m.body_withheld) return el("td", { class: "body-col body withheld", title: m.body_withheld }, "withheld");
  if (m.body_not_stored) return el("td", { class: "body-col body withheld", title: m.body_not_stored }, "not stored");
  return el("td", { class: "body-col body" }, m.body === undefined || m.body === null ? "" : m.body);
}

function renderMessages(messages) {
  fill("messages", messages, (m) => el("tr", { "data-sid": m.sid || "" },
    el("td", {}, timeEl(m.created_at)),
    el("td", { class: "mono", title: m.sid || "" }, shortSid(m.sid)),
    el("td", { class: "mono" }, m.to),
    el("td", {}, m.team || el("span", { class: "muted" }, "—")),
    el("td", {}, task(m)),
    el("td", {}, badge(m.status || m.send_state), m.error_code ? el("span", { class: "mono" }, ` ${m.error_code}`) : null),
    el("td", {}, timeline(m.history)),
    bodyCell(m)));
}

function keyword(word) {
  if (!word) return el("span", { class: "muted" }, "—");
  return el("span", { class: `badge ${word === "STOP" ? "bad" : word === "START" ? "ok" : ""}` }, word);
}

function renderInbound(messages) {
  fill("inbound", messages, (m) => el("tr", { "data-sid": m.sid || "" },
    el("td", {}, timeEl(m.received_at)),
    el("td", { class: "mono" }, m.from),
    el("td", { class: "mono" }, m.to),
    el("td", {}, m.team || el("span", { class: "muted" }, "—")),
    el("td", {}, keyword(m.opt_out_type)),
    bodyCell(m)));
}

function renderOptOuts(rows) {
  fill("opt-outs", rows, (o) => el("tr", {},
    el("td", { class: "mono" }, o.number),
    el("td", {}, el("span", { class: "badge bad" }, o.keyword || "STOP")),
    el("td", {}, o.team || el("span", { class: "muted" }, "—")),
    el("td", {}, timeEl(o.updated_at))));
}

// --- loading --------------------------------------------------------------------------------------

function showNotice(err) {
  const notice = document.getElementById("notice");
  notice.replaceChildren();
  if (err instanceof HttpError && (err.status === 401 || err.status === 403)) {
    notice.append(err.status === 401 ? "You are not signed in to Airflow. " : "You may not read these messages. ",
                  el("a", { href: "../../", target: "_top" }, "Open Airflow"));
  } else if (err instanceof HttpError && err.status === 503) {
    notice.append("The Twilio SMS store does not answer; the server log says why.");
  } else {
    notice.append(`Could not load the messages: ${err.message || err}`);
  }
  notice.hidden = false;
}

let loading = null;

async function load() {
  if (loading) return loading;
  const period = document.getElementById("period").value;
  const bodies = document.getElementById("show-bodies").checked;
  const body = bodies ? "&include_body=true" : "";
  document.body.classList.toggle("bodies", bodies);
  loading = Promise.all([
    getJson(`/summary?period=${encodeURIComponent(period)}`),
    getJson(`/messages?direction=outbound&include_history=true&limit=50${body}`),
    getJson(`/messages?direction=inbound&limit=50${body}`),
    getJson("/opt-outs?limit=50"),
  ]).then(([summary, outbound, inbound, optOuts]) => {
    renderSummary(summary);
    renderMessages(outbound.messages);
    renderInbound(inbound.messages);
    renderOptOuts(optOuts.opt_outs);
    document.getElementById("notice").hidden = true;
    document.body.dataset.loaded = "true";
  }).catch(showNotice).finally(() => { loading = null; });
  return loading;
}

document.addEventListener("DOMContentLoaded", () => {
  watchLook();
  document.getElementById("period").addEventListener("change", load);
  document.getElementById("show-bodies").addEventListener("change", load);
  document.getElementById("refresh").addEventListener("click", load);
  setInterval(() => { if (!document.hidden) load(); }, REFRESH_MS);
  load();
});
