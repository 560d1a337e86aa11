// The workflow page: the definition in an editor, validated as you type (debounced, through
// POST /workflows/validate), its graph, its versions, and a run button with an inputs form.
import { api, authoringOrder, badge, el, errorText, pageData, pretty, setChildren, showAlert, timeEl } from "./api.js";
import { renderGraph } from "./graph.js";

const page = pageData();
const $ = (id) => document.getElementById(id);
const editor = $("definition");
const validation = $("validation");
const alertBox = $("wf-alert");
const enc = encodeURIComponent;
let lastValidated = null;
let timer = null;
let sequence = 0;

function hasAgent(definition) {
  return Array.isArray(definition && definition.nodes) && definition.nodes.some((n) => n && n.type === "agent");
}

function problems(title, list, cls) {
  if (!list.length) return null;
  return el("div", { class: cls },
    el("strong", {}, title),
    el("ul", {}, list.map((p) => el("li", {}, el("code", {}, p.path || "/"), " ", p.message,
      p.rule ? el("span", { class: "muted" }, ` (${p.rule})`) : ""))));
}

function parseEditor() {
  try {
    return { definition: JSON.parse(editor.value) };
  } catch (err) {
    return { error: err.message };
  }
}

function drawGraph(definition) {
  renderGraph($("graph"), definition, { label: `Graph of ${page.tag || "the new workflow"}` });
  $("llm-note").hidden = page.llm_configured || !hasAgent(definition);
}

async function validateNow() {
  const parsed = parseEditor();
  if (parsed.error) {
    validation.className = "validation invalid";
    setChildren(validation, el("strong", {}, "Not JSON: "), parsed.error);
    return;
  }
  drawGraph(parsed.definition);
  const canonical = JSON.stringify(parsed.definition);
  if (canonical === lastValidated) return;
  lastValidated = canonical;
  const mine = ++sequence;
  validation.className = "validation pending";
  validation.textContent = "Validating…";
  try {
    const report = await api("/workflows/validate", { method: "POST", body: { workflow: parsed.definition } });
    if (mine !== sequence) return; // a newer edit is being checked
    validation.className = `validation ${report.valid ? "valid" : "invalid"}`;
    setChildren(validation, 
      report.valid ? el("strong", {}, "✓ Valid") : el("strong", {}, `✗ ${report.errors.length} problem(s)`),
      problems("Errors", report.errors, "errors"),
      problems("Warnings", report.warnings, "warnings"),
    );
  } catch (err) {
    if (mine !== sequence) return;
    lastValidated = null;
    validation.className = "validation invalid";
    validation.textContent = `Could not validate: ${errorText(err)}`;
  }
}

function scheduleValidation() {
  clearTimeout(timer);
  timer = setTimeout(validateNow, 700);
}

function guessInputs(definition) {
  const names = new Set();
  const text = JSON.stringify(definition);
  for (const m of text.matchAll(/\$?inputs\.([A-Za-z_][A-Za-z0-9_]*)/g)) names.add(m[1]);
  return Object.fromEntries([...names].map((n) => [n, ""]));
}

async function save(event) {
  event.preventDefault();
  showAlert(alertBox, "");
  const parsed = parseEditor();
  if (parsed.error) {
    showAlert(alertBox, `The definition is not JSON: ${parsed.error}`);
    editor.focus();
    return;
  }
  const tag = page.is_new ? $("tag-input").value.trim() : page.tag;
  const button = $("save-btn");
  button.disabled = true;
  $("save-status").textContent = "Saving…";
  try {
    const saved = await api("/workflows", { method: "POST",
      body: { tag_name: tag, workflow: parsed.definition, description: $("description").value } });
    if (page.is_new) {
      location.assign(`/workflows/${enc(saved.tag)}/`);
      return;
    }
    $("save-status").textContent = saved.created
      ? `Saved as version ${saved.version}.` : `No change: version ${saved.version} has this content.`;
    $("description").value = "";
    await Promise.all([loadSummary(), loadVersions()]);
  } catch (err) {
    $("save-status").textContent = "";
    showAlert(alertBox, `Not saved: ${errorText(err)}`);
  } finally {
    button.disabled = false;
  }
}

async function loadSummary() {
  const wf = await api(`/workflows/${enc(page.tag)}`);
  setChildren($("wf-summary"), `version ${wf.version} · ${wf.nodes_count} nodes · ${wf.edges_count} edges · `,
    el("span", { class: "mono", title: wf.artifact_id }, wf.artifact_id.slice(0, 19) + "…"));
}

async function loadVersions() {
  const versions = await api(`/workflows/${enc(page.tag)}/versions`);
  const body = $("versions").tBodies[0];
  setChildren(body, ...versions.slice().reverse().map((v) => el("tr", {},
    el("td", {}, v.seq),
    el("td", { class: "mono", title: v.artifact_id }, v.artifact_id.slice(7, 19)),
    el("td", {}, v.description || ""),
    el("td", {}, timeEl(v.created_at)),
    el("td", {}, el("button", { type: "button", class: "btn small", onclick: () => loadVersion(v.seq),
      "aria-label": `Load version ${v.seq} into the editor` }, "Load")),
  )));
}

async function loadVersion(seq) {
  try {
    const v = await api(`/workflows/${enc(page.tag)}/versions/${seq}?materialize=true`);
    editor.value = pretty(authoringOrder(v.definition));
    $("save-status").textContent = `Version ${seq} is in the editor; save to make it the current version.`;
    editor.focus();
    scheduleValidation();
  } catch (err) {
    showAlert(alertBox, errorText(err));
  }
}

async function loadRuns() {
  const runs = await api(`/workflows/${enc(page.tag)}/runs?limit=10`);
  const body = $("recent-runs").tBodies[0];
  if (!runs.length) {
    setChildren(body, el("tr", {}, el("td", { colspan: "3", class: "muted" }, "No runs yet.")));
    return;
  }
  setChildren(body, ...runs.map((r) => el("tr", {},
    el("td", {}, el("a", { class: "mono", href: `/runs/${r.run_id}/` }, r.run_id.slice(0, 8))),
    el("td", {}, badge(r.status)),
    el("td", {}, timeEl(r.created_at)),
  )));
}

async function run(event) {
  event.preventDefault();
  showAlert(alertBox, "");
  let inputs;
  try {
    inputs = JSON.parse($("inputs").value || "{}");
  } catch (err) {
    showAlert(alertBox, `Inputs are not JSON: ${err.message}`);
    $("inputs").focus();
    return;
  }
  if (inputs === null || typeof inputs !== "object" || Array.isArray(inputs)) {
    showAlert(alertBox, "Inputs must be a JSON object, like {\"name\": \"Ada\"}.");
    $("inputs").focus();
    return;
  }
  $("run-btn").disabled = true;
  $("run-status").textContent = "Starting…";
  try {
    const started = await api(`/workflows/${enc(page.tag)}/execute`, { method: "POST", body: { inputs } });
    location.assign(`/runs/${started.run_id}/`);
  } catch (err) {
    $("run-status").textContent = "";
    showAlert(alertBox, `Not started: ${errorText(err)}`);
    $("run-btn").disabled = false;
  }
}

editor.value = pretty(authoringOrder(page.definition));
editor.addEventListener("input", scheduleValidation);
$("save-form").addEventListener("submit", save);
drawGraph(page.definition);
validateNow();
if (!page.is_new) {
  const guessed = guessInputs(page.definition);
  if (Object.keys(guessed).length) $("inputs").value = pretty(guessed);
  $("run-form").addEventListener("submit", run);
  Promise.all([loadSummary(), loadVersions(), loadRuns()]).catch((err) => showAlert(alertBox, errorText(err)));
}
