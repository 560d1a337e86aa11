// The browser's side of the REST API and the WebSocket streams, and a few DOM helpers.

const API = "/api/v1";

// --- exact JSON -----------------------------------------------------------------------------------
// The engine keeps integers to 64 bits (and a run's inputs beyond), a double only to 2^53: a plain
// JSON.parse shows 9007199254740993 as 9007199254740992, and what is saved back is that. Every JSON
// the pages read or write (API answers and bodies, page data, socket frames, JSON a person types)
// goes through these two: an integer no double holds becomes a BigInt, read from the source text,
// and is written back digit for digit. Nothing does arithmetic on a value read from data without
// Number() first (a BigInt mixed with a Number throws).
const INTEGER = /^-?\d+$/;

// Whether this browser gives a reviver the source text and writes raw JSON (both or neither).
const exact = () => typeof JSON.rawJSON === "function";

export function parseJson(text) {
  const precise = exact();
  return JSON.parse(text, (key, value, context) => {
    if (typeof value !== "number" || Number.isSafeInteger(value) || !Number.isInteger(value)) return value;
    if (precise && context) return INTEGER.test(context.source) ? BigInt(context.source) : value;  // 1e300 stays
    inexact();  // an integer a double may have rounded, and no way to read it exactly: say so
    return value;
  });
}

export function stringifyJson(value, space) {
  return JSON.stringify(value, (key, v) => (typeof v === "bigint" ? JSON.rawJSON(v.toString()) : v), space);
}

// A number a person typed in a number field, exactly: an integer past 2^53 as a BigInt.
export function numberOf(text) {
  const n = Number(text);
  if (Number.isSafeInteger(n) || !INTEGER.test(text.trim())) return n;
  if (exact()) return BigInt(text.trim());
  inexact();
  return n;
}

// Said once, at the top of the page: what this browser shows may not be what the server holds.
function inexact() {
  if (document.getElementById("inexact-note")) return;
  const note = el("p", { id: "inexact-note", class: "alert", role: "alert" }, "This browser cannot show integers above "
    + "2^53 exactly (it lacks JSON.rawJSON): a number on this page past 9007199254740991 may be rounded, and would "
    + "be saved rounded. Read it through the API, or use a current browser.");
  (document.querySelector("main") || document.body).prepend(note);
}

export class ApiError extends Error {
  constructor(status, body) {
    const message = (body && (body.message || body.detail)) || `HTTP ${status}`;
    super(message);
    this.status = status;
    this.body = body || {};
  }

  // The first problem a validation error names, for a one-line message.
  get detail() {
    const details = this.body.details || {};
    const errors = details.errors || [];
    if (errors.length) return errors.map((e) => `${e.path || "/"}: ${e.message}`).join("; ");
    const fields = Object.entries(details).filter(([, v]) => Array.isArray(v));
    if (fields.length) return fields.map(([k, v]) => `${k}: ${v.join(", ")}`).join("; ");
    return "";
  }
}

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

export async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  const init = { method, headers, credentials: "same-origin" };
  if (method !== "GET") headers["X-CSRFToken"] = csrfToken();
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = stringifyJson(body);
  }
  const response = await fetch(API + path, init);
  const text = await response.text();
  let data = null;
  if (text) {
    try { data = parseJson(text); } catch { data = { message: text.slice(0, 200) }; }
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export function errorText(err) {
  if (err instanceof ApiError) return shown(err.detail ? `${err.message} (${err.detail})` : err.message);
  return shown(String(err && err.message ? err.message : err));
}

// Text on these pages is often someone else's (a gate's message, an agent's patch description or
// operations, a remote's error): Unicode's bidirectional controls in it (embeddings, overrides,
// isolates, marks) and the characters that draw nothing are shown as JSON's escapes, as the CLI
// and the server-drawn cells write them (aob/text.py, whose lists this copies: tests/web/test_bidi.py
// compares them), since a right-to-left override shows "$10000" for the characters "00001$", and
// tag characters spell text a model reads and a person does not see. The recommended subdivision
// flags (a black flag, tag letters, the cancel tag) are shown as the flags they are; any other run
// of tag characters, escaped. Every text node the helpers below make is this.
const FLAGS = ["gbeng", "gbsct", "gbwls"];  // the recommended subdivision flags: England, Scotland, Wales
const FLAG = new RegExp(`\\u{1f3f4}(?:${FLAGS.map((f) => [...f].map((c) => String.fromCodePoint(0xe0000 + c.codePointAt(0))).join("")).join("|")})\\u{e007f}`, "u");
const BIDI = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/u;
// Unicode's Default_Ignorable_Code_Point characters but the bidirectional controls, the zero-width
// (non-)joiner and the first block's variation selectors
const INVISIBLE = /[\u00ad\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b\u2060-\u2065\u206a-\u206f\u3164\ufeff\uffa0\ufff0-\ufff8\u{1bca0}-\u{1bca3}\u{1d173}-\u{1d17a}\u{e0000}-\u{e0fff}]/u;
const SHOWN = new RegExp(`(${FLAG.source})|${BIDI.source}|${INVISIBLE.source}`, "gu");

function escaped(char) {
  let out = "";
  for (let i = 0; i < char.length; i += 1) out += `\\u${char.charCodeAt(i).toString(16).padStart(4, "0")}`;
  return out;
}

export function shown(value) {
  return String(value).replace(SHOWN, (char, flag) => flag || escaped(char));
}

export function textNode(value) {
  return document.createTextNode(shown(value));
}

// el("div", {class: "x", onclick: fn}, "text", child, ...)
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else if (key === "text") node.textContent = shown(value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : textNode(child));
  }
  return node;
}

// A list's text (a patch's or a version's description) is a {truncated, bytes, href} marker once
// the answer's byte budget is spent (the server's selectors.fill_within): then a button reads it
// whole from the item itself (``load`` answers the string).
export function listedText(value, load) {
  if (value === null || value === undefined || typeof value === "string") return value || "";
  const box = el("span", {});
  const button = el("button", { type: "button", class: "btn small" }, "Show it");
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      setChildren(box, await load());
    } catch (err) {
      button.disabled = false;
      setChildren(box, el("span", { class: "alert" }, errorText(err), " "), button);
    }
  });
  setChildren(box, el("span", { class: "muted" }, `Too long to list (${value.bytes} bytes). `), button);
  return box;
}

const present = (children) => children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false && c !== "")
  .map((c) => (c instanceof Node ? c : textNode(c)));

// replaceChildren that skips null / false / "" and flattens arrays.
export function setChildren(node, ...children) {
  node.replaceChildren(...present(children));
}

// setChildren around a child that stays put: only its siblings are replaced. A node taken out of
// the page, even to be put straight back, loses focus, and the keys typed next go nowhere.
export function setSiblings(keep, before, after) {
  while (keep.previousSibling) keep.previousSibling.remove();
  while (keep.nextSibling) keep.nextSibling.remove();
  keep.before(...present(before));
  keep.after(...present(after));
}

// A definition with its keys in authoring order (the store keeps canonical, sorted JSON). Its own
// keys only, each kept whatever its name: `in` reads Object.prototype too (a metadata key named
// "constructor" was dropped), and an assignment to "__proto__" sets the prototype instead.
export function authoringOrder(definition) {
  const order = (obj, keys) => {
    if (!obj || typeof obj !== "object" || Array.isArray(obj)) return obj;
    const first = keys.filter((k) => Object.hasOwn(obj, k));
    const rest = Object.keys(obj).filter((k) => !first.includes(k));
    return Object.fromEntries([...first, ...rest].map((k) => [k, obj[k]]));
  };
  if (!definition || typeof definition !== "object") return definition;
  const top = order(definition, ["metadata", "nodes", "edges"]);
  if (Array.isArray(top.nodes)) top.nodes = top.nodes.map((n) => order(n, ["id", "type", "config", "timeout_ms", "retry"]));
  if (Array.isArray(top.edges)) top.edges = top.edges.map((e) => order(e, ["from", "to", "condition"]));
  if (top.metadata) top.metadata = order(top.metadata, ["name", "description"]);
  return top;
}

// An approval's message; in a list past its byte budget the marker in its place (approvals.selectors.fill_page).
export function messageOf(approval, otherwise = "") {
  const m = approval.message;
  return m && m.truncated ? `(a ${m.bytes}-byte message, too long for this list: open approval ${approval.id})` : m || otherwise;
}

export function pretty(value) {
  return stringifyJson(value, 2);
}

export function jsonBlock(value, label) {
  return el("pre", { class: "json", tabindex: "0", "aria-label": label || "JSON" }, pretty(value));
}

// The one approve/reject form, for the inbox and the run page: a comment, the form's data as JSON
// when the approval has a form, and POST /approvals/{id}/decide. `lead` goes above the fields;
// `onDecided` runs after a decision was counted.
// A gate whose guarded action a patch changed since the run started says so above its context
// (the context's action_changed, approvals.services.action_changed), with the patches applied and
// where they are read: the message was written for the action as it was.
export function actionChangedNote(approval) {
  const changed = (approval.context || {}).action_changed;
  if (!changed) return null;
  const list = (changed.patches || []).map((p) => `#${p.seq}${p.node_id ? ` by ${p.node_id}` : ""}`).join(", ");
  return el("p", { class: "alert", role: "note" }, `Changed since the run started: ${changed.warning}`,
    list ? ` (patches ${list}; ` : " (", el("a", { href: `/runs/${approval.run_id}/` }, "see the run's patches"), ").");
}

export function decisionForm(approval, { attrs = {}, lead = [], onDecided = () => {} } = {}) {
  const commentId = `comment-${approval.id}`;
  const dataId = `data-${approval.id}`;
  const status = el("p", { class: "muted", role: "status", "aria-live": "polite" });
  const form = el("form", { class: "approve-box", ...attrs }, lead,
    el("label", { for: commentId }, "Comment (optional)"),
    el("textarea", { id: commentId, rows: "2" }),
    approval.form ? [el("label", { for: dataId }, "Form data (JSON)"),
      el("textarea", { id: dataId, class: "code", rows: "3" }, "{}")] : null,
    el("div", { class: "row" },
      el("button", { type: "submit", class: "btn primary", value: "approve" }, "Approve"),
      el("button", { type: "submit", class: "btn danger", value: "reject" }, "Reject")),
    status);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const approve = ev.submitter ? ev.submitter.value === "approve" : true;
    // the action as read here: a patch that changed it since makes the vote a 409, never a vote for it
    const body = { approve, comment: form.querySelector(`#${commentId}`).value, action_digest: approval.action_digest ?? null };
    if (approval.form) {
      try { body.data = parseJson(form.querySelector(`#${dataId}`).value || "null"); } catch (err) {
        status.textContent = `Form data is not JSON: ${err.message}`;
        return;
      }
    }
    form.querySelectorAll("button").forEach((b) => { b.disabled = true; });
    status.textContent = approve ? "Approving…" : "Rejecting…";
    try {
      await api(`/approvals/${approval.id}/decide`, { method: "POST", body });
      status.textContent = approve ? "Approved." : "Rejected.";
      onDecided();
    } catch (err) {
      status.textContent = errorText(err);
      // a patch changed what this form was drawn for: it stays disabled, the page read again decides
      if (err instanceof ApiError && err.body && err.body.error === "action_changed") return;
      form.querySelectorAll("button").forEach((b) => { b.disabled = false; });
    }
  });
  return form;
}

export function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return d.toLocaleString(undefined, { year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit",
    minute: "2-digit", second: "2-digit" });
}

export function timeEl(iso) {
  return iso ? el("time", { datetime: iso }, fmtTime(iso)) : "";
}

// A form its page's script sends: its submit buttons start disabled (``data-scripted`` in the HTML),
// so a click before the script has loaded cannot make the browser send it itself (a reload that
// lost what was typed, and sent nothing); they work once the script has taken the form over.
export function takeOver(form, onSubmit) {
  form.addEventListener("submit", onSubmit);
  for (const button of form.querySelectorAll("[data-scripted]")) {
    button.disabled = false;
    button.removeAttribute("data-scripted");
  }
}

export function pageData() {
  const node = document.getElementById("page-data");
  return node ? parseJson(node.textContent) : {};
}

export function showAlert(node, message) {
  node.textContent = shown(message || "");
  node.hidden = !message;
}

export function badge(status, extra = "") {
  return el("span", { class: `badge s-${status} ${extra}`.trim() }, status);
}

// A WebSocket that reconnects with backoff; ``urlFor()`` is asked for the URL on every connect, so
// the run page can resume with ?after=<last seq>. Closes with 4401/4403 are final.
export class LiveSocket {
  constructor(urlFor, { onFrame, onState }) {
    this.urlFor = urlFor;
    this.onFrame = onFrame;
    this.onState = onState || (() => {});
    this.delay = 500;
    this.stopped = false;
    this.connect();
    window.addEventListener("pagehide", () => this.stop());
  }

  connect() {
    if (this.stopped) return;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}${this.urlFor()}`);
    this.ws = ws;
    this.onState("connecting");
    ws.addEventListener("open", () => { this.onState("live"); });
    ws.addEventListener("message", (msg) => {
      this.delay = 500;
      let frame;
      try { frame = parseJson(msg.data); } catch { return; }
      this.onFrame(frame);
    });
    ws.addEventListener("close", (event) => {
      if (this.stopped) return;
      if (event.code === 4401 || event.code === 4403) {
        this.onState(event.code === 4401 ? "unauthorised" : "forbidden");
        return;
      }
      const wait = this.delay;
      this.delay = Math.min(this.delay * 2, 15000);
      this.onState("reconnecting", wait);
      setTimeout(() => this.connect(), wait);
    });
  }

  stop() {
    this.stopped = true;
    if (this.ws) this.ws.close();
  }
}

export function liveLabel(state, wait) {
  return {
    connecting: "connecting…",
    live: "● live",
    reconnecting: `reconnecting in ${Math.round((wait || 0) / 1000)} s…`,
    unauthorised: "not logged in — reload the page",
    forbidden: "not allowed to watch this run",
  }[state] || state;
}

// A destructive button asks a second press within 5 s (its text says what the second does:
// ``confirmLabel``, or what that function answers, such as a count read first, null when there is
// nothing to do); while ``act`` runs the button is disabled, and ``failed`` is told what it or the
// label's read threw. The label comes back after.
export function onSecondPress(button, confirmLabel, act, failed) {
  const label = button.textContent;
  let armed = null;
  button.addEventListener("click", async () => {
    if (!armed) {
      let text = confirmLabel;
      if (typeof confirmLabel === "function") {
        button.disabled = true;
        try {
          text = await confirmLabel();
        } catch (err) {
          failed(err);
          return;
        } finally {
          button.disabled = false;
        }
        if (text === null) return;
      }
      button.textContent = text;
      armed = setTimeout(() => { armed = null; button.textContent = label; }, 5000);
      return;
    }
    clearTimeout(armed);
    armed = null;
    button.disabled = true;
    try {
      await act();
    } catch (err) {
      failed(err);
    } finally {
      button.disabled = false;
      button.textContent = label;
    }
  });
}
