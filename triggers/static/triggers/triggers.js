// A workflow's schedules and webhooks: list, add, enable/disable, remove; a new hook's secret is
// shown once, with how to sign a delivery; a hook's latest deliveries, the refused ones with why.
import {
  api, el, errorText, onSecondPress, pageData, parseJson, setChildren, showAlert, stringifyJson, takeOver, timeEl,
} from "/static/aob/api.js";

const { tag } = pageData();
const alertBox = document.getElementById("triggers-alert");
const schedules = document.querySelector("#schedules tbody");
const hooks = document.querySelector("#hooks tbody");
const secretBox = document.getElementById("hook-secret");
const deliveriesBox = document.getElementById("hook-deliveries");

function fail(err) { showAlert(alertBox, errorText(err)); }

// An action, then the tables drawn again; what it shows (a secret) is shown once they are: a row
// drawn after it would replace a button its user already pressed once (a second press lost).
async function act(fn) {
  try {
    const shown = await fn();
    showAlert(alertBox, "");
    await load();
    if (typeof shown === "function") shown();
  } catch (err) { fail(err); }
}

// What cannot be undone (a removal; a new secret that stops the old one signing at once) asks a
// second press within 5 s, as the run page's Cancel and Delete do (onSecondPress).
function destructive(label, confirmLabel, fn) {
  const button = el("button", { type: "button", class: "btn small danger" }, label);
  onSecondPress(button, confirmLabel, () => act(fn), fail);
  return button;
}

function toggle(label, enabled, onChange) {
  return el("input", { type: "checkbox", "aria-label": label, checked: enabled, onchange: (ev) => onChange(ev.target.checked) });
}

async function load() {
  try {
    const [mine, theirHooks] = await Promise.all([api("/schedules"), api("/hooks")]);
    setChildren(schedules, mine.filter((s) => s.tag === tag).map((s) => el("tr", {},
      el("td", { class: "mono" }, s.cron), el("td", {}, s.timezone), el("td", {}, s.catch_up),
      el("td", { class: "mono" }, stringifyJson(s.inputs)),
      el("td", {}, toggle(`schedule ${s.id} enabled`, s.enabled,
        (on) => act(() => api(`/schedules/${s.id}`, { method: "PATCH", body: { enabled: on } })))),
      el("td", {}, destructive("Remove", "Confirm: remove this schedule",
        () => api(`/schedules/${s.id}`, { method: "DELETE" }))))));
    setChildren(hooks, theirHooks.filter((h) => h.tag === tag).map((h) => el("tr", {},
      el("td", { class: "mono", style: "word-break: break-all" }, h.url),
      el("td", { class: "mono", style: "word-break: break-all" }, h.mapping ? stringifyJson(h.mapping) : "—"),
      el("td", {}, timeEl(h.last_delivery_at) || "never"),
      el("td", {}, toggle(`webhook ${h.id} enabled`, h.enabled,
        (on) => act(() => api(`/hooks/${h.id}`, { method: "PATCH", body: { enabled: on } })))),
      el("td", {},
        el("button", { type: "button", class: "btn small", "aria-label": `Deliveries of webhook ${h.id}`,
          onclick: () => showDeliveries(h).catch(fail) }, "Deliveries"),
        el("button", { type: "button", class: "btn small", onclick: () => act(async () => secretShown(
          await api(`/hooks/${h.id}/rotate`, { method: "POST" }), true)) }, "New secret"),
        destructive("New secret, old one stops now", "Confirm: new secret, the old one stops signing now",
          async () => secretShown(await api(`/hooks/${h.id}/rotate`, { method: "POST", body: { grace_s: 0 } }), true)),
        destructive("Remove", "Confirm: remove this webhook", () => api(`/hooks/${h.id}`, { method: "DELETE" }))))));
  } catch (err) { fail(err); }
}

async function showDeliveries(hook) {
  const page = await api(`/hooks/${hook.id}/deliveries?limit=50`);
  deliveriesBox.hidden = false;
  const rows = page.results.map((d) => el("tr", {},
    el("td", {}, timeEl(d.received_at)), el("td", { class: "mono", style: "word-break: break-all" }, d.delivery_id),
    el("td", {}, d.outcome),
    el("td", { style: "word-break: break-word" }, d.error
      ? el("span", {}, el("span", { class: "mono" }, `${d.error.status} ${d.error.code}`), ` ${d.error.message}`)
      : (d.run_id ? el("a", { class: "mono", href: `/runs/${d.run_id}/` }, d.run_id) : "—"))));
  setChildren(deliveriesBox, el("h3", {}, `Deliveries of ${hook.id}`),
    el("p", { class: "muted" }, `Newest first, ${page.results.length} of ${page.count}; refused ones are those `
      + "that were signed and then refused (the body is not kept)."),
    el("table", { class: "table" }, el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Received"),
      el("th", { scope: "col" }, "Delivery"), el("th", { scope: "col" }, "Outcome"),
      el("th", { scope: "col" }, "Run or error"))), el("tbody", {}, ...rows)));
}

function secretShown(hook, rotated = false) { return () => showSecret(hook, rotated); }

function showSecret(hook, rotated = false) {
  secretBox.hidden = false;
  const previous = !rotated ? null : hook.previous_secret_expires_at
    ? el("p", {}, "The previous secret still signs deliveries until ", timeEl(hook.previous_secret_expires_at),
      ", so retries signed before now still land.")
    : el("p", {}, "The previous secret no longer signs.");
  setChildren(secretBox, el("p", {}, el("strong", {}, "Signing secret (shown once): "), el("code", {}, hook.secret)),
    previous,
    el("p", {}, "Sign each delivery: X-AOB-Timestamp (unix seconds), X-AOB-Delivery (your id), and "
      + "X-AOB-Signature: sha256=HMAC-SHA256(secret, timestamp + \".\" + body)."),
    el("pre", { class: "json" }, `ts=$(date +%s); body='{"hello":"world"}'\n`
      + `sig=$(printf '%s.%s' "$ts" "$body" | openssl dgst -sha256 -hmac '${hook.secret}' | cut -d' ' -f2)\n`
      + `curl -X POST ${hook.url} -H "X-AOB-Timestamp: $ts" -H "X-AOB-Delivery: $(uuidgen)" \\\n`
      + `  -H "X-AOB-Signature: sha256=$sig" -H 'Content-Type: application/json' -d "$body"`));
}

takeOver(document.getElementById("schedule-form"), (ev) => {
  ev.preventDefault();
  act(async () => {
    let inputs;
    try { inputs = parseJson(document.getElementById("schedule-inputs").value || "{}"); } catch (err) {
      throw new Error(`Inputs are not JSON: ${err.message}`);
    }
    await api("/schedules", { method: "POST", body: { tag, inputs, cron: document.getElementById("cron").value,
      timezone: document.getElementById("timezone").value, catch_up: document.getElementById("catch-up").value } });
  });
});

takeOver(document.getElementById("hook-form"), (ev) => {
  ev.preventDefault();
  act(async () => {
    const kind = document.getElementById("mapping-kind").value;
    const source = document.getElementById("mapping-source").value;
    let mapping = null;
    if (kind === "cel") mapping = { cel: source };
    if (kind === "template") {
      try { mapping = { template: parseJson(source) }; } catch (err) { throw new Error(`Template is not JSON: ${err.message}`); }
    }
    return secretShown(await api("/hooks", { method: "POST", body: { tag, mapping } }));
  });
});

load();
