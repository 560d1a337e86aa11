// The workflow page: the visual builder and the JSON view side by side, kept equal (an edit in
// either redraws the other), validated as you type (debounced, POST /workflows/validate) with each
// problem shown beside its node; versions, recent runs and a run button with an inputs form.
import { api, ApiError, authoringOrder, badge, el, errorText, listedText, pageData, parseJson, pretty, setChildren, showAlert, shown, stringifyJson,
  takeOver, timeEl } from "./api.js";
import { Builder } from "./builder.js";
import { mountJsonEditor } from "./editor.js";

const page = pageData();
const $ = (id) => document.getElementById(id);
const editor = $("definition");
const validation = $("validation");
const alertBox = $("wf-alert");
const enc = encodeURIComponent;
let lastValidated = null;
let timer = null;
let sequence = 0;
let builder = null;
let json = { set: (text) => { editor.value = text; }, focus: () => editor.focus() };
// The version the editor's text was based on, sent as the save's base_version: a save over a
// version someone else saved since is refused (409), never silently dropping theirs. null: a new tag.
let baseVersion = page.is_new ? null : page.version;
// The editor's text as last loaded or saved: anything else in it is the person's unsaved work, which
// no click on this page throws away unasked, and leaving the page asks about.
let savedText = null;
const unsaved = () => savedText !== null && editor.value !== savedText;
window.addEventListener("beforeunload", (event) => {
  if (unsaved()) event.preventDefault();
});

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
    return { definition: parseJson(editor.value) };
  } catch (err) {
    return { error: err.message };
  }
}

function drawGraph(definition) {
  if (builder) builder.setDefinition(definition);
  $("llm-note").hidden = page.llm_configured || !hasAgent(definition);
}

// Indented JSON in authoring order, each [x, y] of metadata.layout on one line; bidirectional
// controls (only ever inside its strings) written as JSON's own escapes (shown), the same value
// read back, so the editor never draws a string reordered (CodeMirror marks some of them, not all).
function prettyDefinition(definition) {
  return shown(pretty(authoringOrder(definition)).replace(/\[\s+(-?[\d.]+),\s+(-?[\d.]+)\s+\]/g, "[$1, $2]"));
}

// The builder changed the definition: the JSON view follows, then validation.
function fromBuilder(definition) {
  json.set(prettyDefinition(definition));
  editor.value = prettyDefinition(definition);
  $("llm-note").hidden = page.llm_configured || !hasAgent(definition);
  scheduleValidation(250);
}

// The JSON view changed: the builder follows (once it parses), then validation.
function fromJson() {
  const parsed = parseEditor();
  if (!parsed.error) drawGraph(parsed.definition);
  scheduleValidation();
}

async function validateNow() {
  const parsed = parseEditor();
  if (parsed.error) {
    validation.className = "validation invalid";
    setChildren(validation, el("strong", {}, "Not JSON: "), parsed.error);
    return;
  }
  const canonical = stringifyJson(parsed.definition);
  if (canonical === lastValidated) return;
  lastValidated = canonical;
  const mine = ++sequence;
  validation.className = "validation pending";
  validation.textContent = "Validating…";
  try {
    const report = await api("/workflows/validate", { method: "POST", body: { workflow: parsed.definition } });
    if (mine !== sequence) return; // a newer edit is being checked
    if (builder) builder.setProblems(report.errors);
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

function scheduleValidation(delay = 700) {
  clearTimeout(timer);
  timer = setTimeout(validateNow, delay);
}

function guessInputs(definition) {
  const names = new Set();
  const text = stringifyJson(definition);
  for (const m of text.matchAll(/\$?inputs\.([A-Za-z_][A-Za-z0-9_]*)/g)) names.add(m[1]);
  return Object.fromEntries([...names].map((n) => [n, ""]));
}

// A 409 version_conflict: say whose version is current now, keep the editor's text as it is, and
// offer to look at theirs (a new tab) or to save this text over it (based on the version named).
function showConflict(err, tag) {
  const details = err.body.details || {};
  const current = details.current_version;
  const gone = current === null || current === undefined;  // the tag was deleted meanwhile
  const look = gone ? null
    : el("a", { href: `/workflows/${enc(tag)}/`, target: "_blank", rel: "noopener" }, `Open version ${current} in a new tab`);
  const overwrite = page.is_new ? null
    : el("button", { type: "button", class: "btn small danger", id: "overwrite-btn", onclick: () => {
      baseVersion = gone ? null : current;  // null: make the deleted tag again
      $("save-form").requestSubmit();
    } }, gone ? "Save mine as a new workflow" : `Save mine over version ${current}`);
  alertBox.hidden = false;
  setChildren(alertBox, el("strong", {}, "Not saved: "), err.message,
    el("span", {}, " Your text is still in the editor."), " ", look, " ", overwrite);
}

async function save(event) {
  event.preventDefault();
  showAlert(alertBox, "");
  const parsed = parseEditor();
  if (parsed.error) {
    showAlert(alertBox, `The definition is not JSON: ${parsed.error}`);
    json.focus();
    return;
  }
  const tag = page.is_new ? $("tag-input").value.trim() : page.tag;
  const sent = editor.value;  // what this save keeps: edits typed while it is out are still unsaved
  const button = $("save-btn");
  button.disabled = true;
  $("save-status").textContent = "Saving…";
  try {
    const saved = await api("/workflows", { method: "POST",
      body: { tag_name: tag, workflow: parsed.definition, description: $("description").value,
        base_version: baseVersion } });
    baseVersion = saved.version;
    savedText = sent;
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
    if (err instanceof ApiError && err.status === 409 && err.body.error === "version_conflict") showConflict(err, tag);
    else showAlert(alertBox, `Not saved: ${errorText(err)}`);
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
    el("td", {}, listedText(v.description, async () => (await api(`/workflows/${enc(page.tag)}/versions/${v.seq}`)).description)),
    el("td", {}, timeEl(v.created_at)),
    el("td", {}, el("button", { type: "button", class: "btn small", onclick: (ev) => loadVersion(v.seq, ev.currentTarget),
      "aria-label": `Load version ${v.seq} into the editor` }, "Load")),
  )));
}

async function loadVersion(seq, button) {
  if (unsaved() && !button.dataset.armed) {  // a second click within 5 s replaces the edits
    button.dataset.armed = "1";
    button.textContent = "Discard my edits and load";
    setTimeout(() => { delete button.dataset.armed; button.textContent = "Load"; }, 5000);
    return;
  }
  try {
    const v = await api(`/workflows/${enc(page.tag)}/versions/${seq}?materialize=true`);
    editor.value = prettyDefinition(v.definition);
    json.set(editor.value);
    savedText = editor.value;
    drawGraph(v.definition);
    $("save-status").textContent = `Version ${seq} is in the editor; save to make it the current version.`;
    json.focus();
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
    inputs = parseJson($("inputs").value || "{}");
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
    // the version this page shows: another tab's save since does not change what runs
    const body = baseVersion === null ? { inputs } : { inputs, version: baseVersion };
    const started = await api(`/workflows/${enc(page.tag)}/execute`, { method: "POST", body });
    if (!unsaved()) {
      location.assign(`/runs/${started.run_id}/`);
      return;
    }
    // the run is of the saved version; the edits stay here, unsaved, and the run opens beside them
    setChildren($("run-status"), "Started ", el("a", { href: `/runs/${started.run_id}/`, target: "_blank",
      rel: "noopener", id: "started-run" }, `run ${started.run_id.slice(0, 8)}`),
      " of the saved version; your edits here are not saved.");
    $("run-btn").disabled = false;
  } catch (err) {
    $("run-status").textContent = "";
    showAlert(alertBox, `Not started: ${errorText(err)}`);
    $("run-btn").disabled = false;
  }
}

async function start() {
  editor.value = prettyDefinition(page.definition);
  takeOver($("save-form"), save);
  if (!page.is_new) {  // before any await: a person may type inputs while the editors load
    const guessed = guessInputs(page.definition);
    if (Object.keys(guessed).length && $("inputs").value.trim() === "{}") $("inputs").value = pretty(guessed);
    takeOver($("run-form"), run);
  }
  let catalogue = { types: [], references: {} };
  let schema = {};
  try {
    [catalogue, schema] = await Promise.all([api("/node-types"), api("/schema/workflow")]);
  } catch (err) {
    showAlert(alertBox, `Could not load the node types: ${errorText(err)}`);
  }
  builder = new Builder($("builder"), { catalogue: catalogue.types, references: catalogue.references, onChange: fromBuilder });
  json = await mountJsonEditor(editor, { workflowSchema: schema, catalogue: catalogue.types, onChange: fromJson });
  drawGraph(page.definition);
  savedText = editor.value;  // as the editors show it once drawn: from here on, what changes is the person's
  validateNow();
  if (!page.is_new) {
    if (location.hash === "#run-it") $("inputs").focus();
    Promise.all([loadSummary(), loadVersions(), loadRuns()]).catch((err) => showAlert(alertBox, errorText(err)));
  }
}

start();
