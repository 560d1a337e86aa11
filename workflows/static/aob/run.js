// The run page. Everything on it follows the run's WebSocket: each event frame re-fetches
// /runs/{id}/details (coalesced while a fetch is in flight) and redraws. The socket starts at the
// run's newest page of events (page.events_after), and resumes with ?after=<last seq> after a
// disconnect, with backoff. No polling.
import { LiveSocket, api, badge, decisionForm, el, errorText, fmtTime, jsonBlock, listedText, liveLabel, messageOf, numberOf, onSecondPress, pageData, pretty, setChildren, setSiblings, showAlert, stringifyJson, timeEl } from "./api.js";
import { graphOf, renderGraph } from "./graph.js";
import { fmtMs, renderTimeline } from "./timeline.js";

const page = pageData();
const runId = page.run_id;
const $ = (id) => document.getElementById(id);
const FINISHED = new Set(page.finished);  // Run.FINISHED, as the page was given it
const ACTIVE = new Set(page.active);  // NodeRun.ACTIVE

const state = {
  details: null,
  latest: new Map(),  // the last event of each type and node (lastEvent)
  lastSeq: page.events_after,
  selected: null,
  userSelected: false,
  approvals: [],
  visible: [],
  above: null,  // the run just above, when a node is paused on a budget (fetchAll)
  inflight: false,
  dirty: false,
  artifacts: new Map(),
  patchesKey: "",
};

// --- data ---------------------------------------------------------------------------------------

async function fetchAll() {
  const details = await api(`/runs/${runId}/details`);
  const needApprovals = details.nodes.some((n) => n.status === "waiting")
    || details.patches.some((p) => p.status === "pending_approval")
    || (details.patches_count ?? 0) > details.patches.length;  // an older one may be held
  // the ones this user may decide, and every one of the run they may see (its flags as they are
  // now: who can still decide it), for a gate they cannot decide themselves
  const [approvals, visible] = needApprovals
    ? (await Promise.all([api(`/approvals?status=pending&run=${runId}&limit=100`),
      api(`/approvals?run=${runId}&limit=100`)])).map((page) => page.results) : [[], []];
  // a node paused on the run just above: its ceilings and spend are read from that run (shown to
  // those who may see it: within_run), not from the pause, which names neither
  const up = details.run.budget.within_run;
  const above = up && details.nodes.some((n) => n.wait_reason === "budget") ? await api(`/runs/${up}`).catch(() => null) : null;
  return { details, approvals, visible, above };
}

async function refresh() {
  if (state.inflight) {
    state.dirty = true;
    return;
  }
  state.inflight = true;
  try {
    do {
      state.dirty = false;
      const [{ details, approvals, visible, above }, timeline] = await Promise.all([fetchAll(), api(`/runs/${runId}/timeline`)]);
      state.details = details;
      state.above = above;
      state.approvals = approvals;
      state.visible = visible;
      render();
      renderTimeline($("timeline"), timeline);
    } while (state.dirty);
  } catch (err) {
    showAlert($("run-alert"), `Could not load the run: ${errorText(err)}`);
  } finally {
    state.inflight = false;
  }
}

function onFrame(frame) {
  if (typeof frame.seq !== "number" || frame.seq <= state.lastSeq) return;
  state.lastSeq = frame.seq;
  state.latest.set(`${frame.type}/${frame.node_id}`, frame);
  appendEvent(frame);
  refresh();
}

// --- rendering ----------------------------------------------------------------------------------

function nodeById(id) {
  return state.details && state.details.nodes.find((n) => n.node_id === id);
}

function currentNodes() {
  return state.details ? state.details.nodes.filter((n) => ACTIVE.has(n.status)) : [];
}

// the run's inputs in its header line: the first characters, or past details' byte budget (as
// details say, never as the value looks: inputs are anyone's JSON) a link to where they are read whole
function inputsShown(run) {
  const inputs = run.inputs || {};
  if (state.details.inputs_truncated) {
    return [" · inputs ", el("a", { href: `/api/v1/runs/${encodeURIComponent(run.run_id)}/inputs` }, `(${inputs.bytes} bytes)`)];
  }
  if (!Object.keys(inputs).length) return [];
  const text = stringifyJson(inputs);
  return [` · inputs ${text.length > 300 ? `${text.slice(0, 300)}…` : text}`];
}

function render() {
  const { run } = state.details;
  const status = $("run-status");
  status.textContent = run.status.replaceAll("_", " ");
  status.className = `badge big s-${run.status}`;
  status.dataset.status = run.status;
  $("cancel-btn").hidden = !page.is_owner || FINISHED.has(run.status);
  $("delete-btn").hidden = !page.is_owner || !FINISHED.has(run.status);
  const meta = [`created ${fmtTime(run.created_at)}`];
  if (run.started_at) meta.push(`started ${fmtTime(run.started_at)}`);
  if (run.finished_at) meta.push(`finished ${fmtTime(run.finished_at)}`);
  if (run.deleting_at) meta.push(`being deleted since ${fmtTime(run.deleting_at)}: some of its rows are gone`);
  setChildren($("run-meta"), meta.join(" · "), ...inputsShown(run),
    run.replay_of ? el("span", {}, " · replay of ", el("a", { href: `/runs/${run.replay_of}/` }, run.replay_of.slice(0, 8)),
      run.replay_from_node ? ` from ${run.replay_from_node}` : "") : "");
  if (run.error) showAlert($("run-alert"), `Run failed: ${run.error.message || stringifyJson(run.error)}`
    + (run.error.node_id ? ` (node ${run.error.node_id})` : ""));
  renderResult(run);
  $("llm-note").hidden = page.llm_configured || !state.details.nodes.some((n) => n.type === "agent");

  const now = currentNodes();
  if (!state.userSelected && (now.length || !state.selected)) {
    const waiting = now.find((n) => n.status === "waiting");
    state.selected = (waiting || now[0] || state.details.nodes[0] || {}).node_id || null;
  }
  renderNow(now, run);
  drawRunGraph();
  renderNodePanel();
  renderPatches();
  $("patch-count").textContent = (state.details.patches_count ?? state.details.patches.length)
    + (state.details.patch_refusals || []).length;
}

// The nodes running now, as chips that select theirs. A chip with focus stays in the page (only
// its badge is redrawn) while its node is listed: taken out, even to be put straight back, it
// would lose focus, and the Enter pressed next would go nowhere.
function renderNow(now, run) {
  const box = $("now");
  if (!now.length) {
    setChildren(box, el("span", { class: "muted" }, FINISHED.has(run.status) ? `The run has finished: ${run.status}.` : "Nothing running right now."));
    return;
  }
  const focused = box.contains(document.activeElement) ? document.activeElement : null;
  const chips = now.map((n) => {
    if (focused && focused.dataset.node === n.node_id) {
      focused.replaceChildren(`${n.node_id} `, badge(n.status));
      return focused;
    }
    return el("button", { type: "button", class: "chip", "data-node": n.node_id, onclick: () => select(n.node_id, true) },
      `${n.node_id} `, badge(n.status));
  });
  const at = chips.indexOf(focused);
  const label = el("span", {}, "Now: ");
  if (at >= 0) setSiblings(focused, [label, chips.slice(0, at)], chips.slice(at + 1));
  else setChildren(box, label, chips);
}

// The run's result: its duration and output (the error is the alert above, shown once).
function renderResult(run) {
  const done = FINISHED.has(run.status);
  $("result-card").hidden = !done;
  if (!done) return;
  const rows = [["status", run.status], ["duration", fmtMs(run.duration_ms)]];
  const out = [];
  for (const [k, v] of rows) out.push(el("dt", {}, k), el("dd", { id: `result-${k}` }, v));
  if (run.status === "completed") {
    out.push(el("dt", {}, "output"), el("dd", { id: "result-output" },
      run.output_pending ? el("p", { class: "muted" }, "Computing the output…")  // its output_computed event redraws
        : run.output_error ? el("p", { class: "alert" }, run.output_error.message)
          : jsonBlock(run.output, "run output")));
  }
  setChildren($("result"), out);
}

function drawRunGraph() {
  const byId = new Map(state.details.nodes.map((n) => [n.node_id, n]));
  renderGraph($("graph"), state.details.current_definition, {
    label: "Run graph: nodes coloured by status",
    selected: state.selected,
    onSelect: (id) => select(id, false),
    nodeState: (id) => {
      const n = byId.get(id);
      return n ? { status: n.status, patched: n.added_by_patch, current: ACTIVE.has(n.status) } : { status: "not_executed" };
    },
  });
}

function select(id, focusPanel) {
  state.selected = id;
  state.userSelected = true;
  drawRunGraph();
  renderNodePanel();
  if (focusPanel) $("node-panel").focus();
}

function timings(n) {
  const rows = [
    ["queued", n.queued_at && timeEl(n.queued_at)], ["started", n.started_at && timeEl(n.started_at)],
    ["finished", n.finished_at && timeEl(n.finished_at)],
    ["waited in queue", n.queue_time_ms !== null && `${n.queue_time_ms} ms`],
    ["ran for", n.execution_time_ms !== null && `${n.execution_time_ms} ms`],
    ["total", n.total_duration_ms !== null && `${n.total_duration_ms} ms`],
    ["attempts", String(n.attempts)], ["iterations", String(n.iterations)],
  ].filter(([, v]) => v);
  return el("dl", { class: "facts" }, rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

function section(title, value, label) {
  if (value === null || value === undefined || (Array.isArray(value) && !value.length)) return null;
  return el("section", {}, el("h3", {}, title), jsonBlock(value, label));
}

let decideKey = "";

function renderNodePanel() {
  const panel = $("node-panel");
  const n = state.selected && nodeById(state.selected);
  if (!n) {
    setChildren(panel, el("h2", { id: "node-h" }, "Node"),
      el("p", { class: "muted" }, "Select a node in the graph (click, or Tab to it and press Enter)."));
    decideKey = "";
    return;
  }
  const approval = state.approvals.find((a) => a.kind === "node" && a.node_id === n.node_id);
  // Keep what a person is typing: the decide form is rebuilt only when its approval changes (for a
  // budget pause: when the run to raise changes), and otherwise stays in the page (with its values,
  // focus and caret) while the rest is redrawn. A budget form also stays, hidden, while a raise or a
  // wake has the node queued and running, until it pauses again (on the same run: shown again) or ends.
  const between = (n.status === "queued" || n.status === "running") && lastPause(n);
  const ask = ((n.status === "waiting" && n.wait_reason === "budget") || between) ? budgetAsk(n) : null;
  // (without an approval to decide, the note is built again when the gate's approval_required
  // event arrives: the details can be drawn before the socket's replay brings it)
  const asked = lastEvent("approval_required", n);
  const seen = gateSeen(n);
  // (a pause on the node's own budget, or on a run further up, has no form to keep: each pause draws its own)
  const key = approval ? `${approval.id}` : ask ? `budget:${n.node_id}:${ask.node || !ask.target ? `node:${ask.seq}` : ask.target}`
    : `none:${n.node_id}:${n.status}:${asked ? asked.seq : 0}:${seen ? `${seen.nobody_can_decide}${seen.cannot_be_approved}` : ""}`;
  const oldDecide = panel.querySelector(".decide");
  const kept = key === decideKey && oldDecide;
  const decide = kept ? oldDecide : decideForm(n, approval, ask);
  decideKey = key;
  const replay = page.is_owner && FINISHED.has(state.details.run.status)
    ? el("button", { type: "button", class: "btn", onclick: (ev) => replayFrom(n.node_id, ev.currentTarget) }, `Replay from ${n.node_id}`) : null;
  const head = [
    el("h2", { id: "node-h" }, "Node ", el("span", { class: "mono" }, n.node_id), " ", badge(n.status)),
    el("p", { class: "muted" }, `type ${n.type}`, n.added_by_patch ? " · added by a patch" : "", n.reused ? " · output reused" : "",
      n.waiting_for ? ` · waiting for ${n.waiting_for}` : ""),  // the server's words (NodeRun.WAITING_FOR)
  ];
  const rest = [
    timings(n),
    n.error ? el("section", {}, el("h3", {}, "Error"), el("p", { class: "alert" }, n.error.message || ""), jsonBlock(n.error, "error")) : null,
    section("Input", n.input, "input"),
    section("Output", n.output, "output"),
    section("Attempts", n.attempt_log, "attempt log"),
    Object.keys(n.usage || {}).length ? section("Usage", n.usage, "usage") : null,
    replay,
  ];
  if (kept && approval) {  // a colleague's vote changes the count, not what this person is typing
    const votes = decide.querySelector(".votes");
    if (votes) votes.textContent = votesSoFar(approval);
  }
  if (kept && ask) budgetFollow(decide, ask);  // a new pause of that run: new ceilings, same typing
  if (ask) budgetShow(decide, n.status === "waiting");
  if (kept) setSiblings(decide, head, rest);
  else setChildren(panel, head, decide, rest);
}

// The node's last pause: its event names the run whose ceiling stopped it, with that run's ceilings.
function lastPause(n) {
  return lastEvent("node_paused", n);
}

function lastEvent(type, n) {
  return state.latest.get(`${type}/${n.node_id}`) || null;
}

// What a budget pause asks of the owner: the run to raise (a sub-workflow's spend counts against
// the runs above it: the one that stopped the node), that run's ceilings and its spend. A pause on
// the node's own budget (its definition's) asks nothing: it waits for the run's calls in flight.
// A pause on a run above says how far up it is (`above`), never its id nor its figures (a reader of
// this run may not see that one): the one just above is `within_run`, shown to those who may see it.
function budgetAsk(n) {
  const { run } = state.details;
  const pause = lastPause(n);
  const d = (pause && pause.data) || {};
  const above = d.above || 0;
  const target = d.budget_run_id || (above === 1 ? run.budget.within_run : null) || (above ? null : runId);
  const elsewhere = target !== runId;
  const read = elsewhere && state.above && state.above.run_id === target ? state.above : null;  // fetchAll's
  return { seq: pause ? pause.seq : 0, target, elsewhere, above, up: run.budget.within_run, node: Boolean(d.node_budget),
    held: d.held || {}, limits: d.node_budget || d.budget || (read ? read.budget : elsewhere ? {} : run.budget),
    spent: d.spent || (read ? read.usage : elsewhere ? {} : run.usage) };
}

// a ceiling may be an integer past 2^53 (a BigInt: parseJson), and a BigInt times a Number throws
const suggest = (value) => (value === null || value === undefined ? "" : String(typeof value === "bigint" ? value * 2n : value * 2));

function budgetMessage({ target, elsewhere, above, up, node, held, limits, spent }) {
  if (!target) {  // a run further up (or one this reader may not see): said by how far, raised from its page
    return el("p", { class: "message" }, `Paused: the budget of the run ${above} above this one, which this sub-workflow's `
      + "spend counts against, cannot cover the next model call. Its owner raises it there",
      ...(up ? [" (the run above this one is ", el("a", { href: `/runs/${up}/`, class: "mono" }, up.slice(0, 8)), ")."] : ["."]));
  }
  const ceiling = `$${limits.max_cost_usd ?? "?"}, ${limits.max_tokens ?? "?"} tokens`;
  const spentText = `Spent there so far: $${Number(spent.cost_usd || 0).toFixed(4)}, ${spent.tokens || 0} tokens.`;
  if (node) {
    const ceilings = [limits.max_cost_usd == null ? "" : `$${limits.max_cost_usd}`, limits.max_tokens == null ? "" : `${limits.max_tokens} tokens`];
    return el("p", { class: "message" }, `Paused: this node's own budget (${ceilings.filter(Boolean).join(", ")}) cannot cover `
      + `its next model call beside what the run has spent ($${Number(spent.cost_usd || 0).toFixed(4)}, ${spent.tokens || 0} tokens) `
      + `and what its calls in flight hold ($${Number(held.cost_usd || 0).toFixed(4)}, ${held.tokens || 0} tokens). `
      + "It resumes when they end; the budget is the workflow's, and raising the run's does not change it.");
  }
  return elsewhere
    ? el("p", { class: "message" }, "Paused: this sub-workflow's spend counts against run ", el("a", { href: `/runs/${target}/`, class: "mono" }, target.slice(0, 8)),
      `, whose budget (${ceiling}) cannot cover the next model call. Raising it resumes this node. `, spentText)
    : el("p", { class: "message" }, `Paused: the run's budget (${ceiling}) cannot cover the next model call. ${spentText.replace(" there", "")}`);
}

function budgetForm(ask) {
  if (ask.node || !ask.target) return el("div", { class: "decide approve-box", "data-pause": ask.seq, role: "status" }, budgetMessage(ask));
  const { target, elsewhere, limits } = ask;
  const cost = el("input", { type: "number", min: "0", step: "0.01", name: "max_cost_usd", required: true, value: suggest(limits.max_cost_usd), "aria-label": "new cost ceiling in USD" });
  const tokens = el("input", { type: "number", min: "0", step: "1000", name: "max_tokens", value: suggest(limits.max_tokens), "aria-label": "new token ceiling" });
  const status = el("span", { class: "muted", role: "status", "aria-live": "polite" });
  const form = el("form", { class: "decide approve-box", "data-pause": ask.seq, "aria-label": elsewhere ? "Raise the budget of the run above" : "Raise the budget of this run" },
    budgetMessage(ask),
    page.is_owner ? el("div", { class: "row" }, el("label", {}, "USD ", cost), el("label", {}, "tokens ", tokens),
      el("button", { type: "submit", class: "btn primary" }, elsewhere ? "Raise that budget and resume" : "Raise budget and resume"), status)
      : el("p", { class: "muted" }, "Only the run's owner can raise its budget."));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { max_cost_usd: Number(cost.value) };
    if (tokens.value !== "") body.max_tokens = numberOf(tokens.value);
    try {
      await api(`/runs/${target}/budget`, { method: "POST", body });
      status.textContent = "Raised; resuming.";
    } catch (err) {
      status.textContent = errorText(err);
    }
  });
  return form;
}

// A kept budget form follows a new pause on the same run's budget: its message, and the suggested
// ceilings the person has not edited. Setting an input's default value changes what it shows only
// until someone types into it, so what the person typed stays. A status about the last raise lapses.
function budgetFollow(form, ask) {
  if (form.dataset.pause === String(ask.seq)) return;
  form.dataset.pause = ask.seq;
  form.querySelector(".message").replaceWith(budgetMessage(ask));
  for (const input of form.querySelectorAll("input")) input.defaultValue = suggest(ask.limits[input.name]);
  const status = form.querySelector("[role=status]");
  if (status) status.textContent = "";
}

// Between two pauses the budget form waits hidden. A hidden field cannot hold focus, so the field
// that had it when the form hid gets it back when the form shows again, unless focus went elsewhere.
let budgetFocus = null;

function budgetShow(form, shown) {
  if (form.hidden === !shown) return;
  if (!shown) {
    budgetFocus = form.contains(document.activeElement) ? document.activeElement : null;
    form.hidden = true;
    return;
  }
  form.hidden = false;
  const unfocused = !document.activeElement || document.activeElement === document.body;
  if (unfocused && form.contains(budgetFocus)) budgetFocus.focus();
  budgetFocus = null;
}

function decideForm(n, approval, ask) {
  if (ask) return budgetForm(ask);
  if (n.status !== "waiting") return el("div", { class: "decide", hidden: true });
  if (!approval) {
    // whether a vote can still settle it, as its approval says now (an approver deactivated since,
    // votes cast), else as the gate's approval_required event said when it asked
    const seen = gateSeen(n);
    const asked = lastEvent("approval_required", n);
    const said = asked && asked.data && asked.data.warning;  // the event's words, when it says the same
    const saysNobody = Boolean(said) && /nobody can decide/.test(said);
    const warning = !seen ? said
      : seen.nobody_can_decide ? (saysNobody ? said
        : "Nobody can decide this gate now: none of its approvers can vote on it. Only cancelling the run ends it.")
      : seen.cannot_be_approved ? (said && !saysNobody ? said
        : "Fewer people could approve this than it needs: it can be rejected, never approved.") : null;
    return el("div", { class: "decide note" }, warning || "Waiting for an approver; you cannot decide this one.");
  }
  return decisionForm(approval, {
    attrs: { class: "decide approve-box", "aria-label": `Decide ${n.node_id}` },
    lead: [el("p", { class: "message" }, messageOf(approval, "Approve?")),
      approval.required_approvals > 1 ? el("p", { class: "muted votes" }, votesSoFar(approval)) : null,
      approval.cannot_be_approved
        ? el("p", { class: "alert" }, "Fewer people could approve this than it needs: it can be rejected, never approved.")
        : null],
  });
}

function gateSeen(n) {
  return (state.visible || []).find((a) => a.kind === "node" && a.node_id === n.node_id && a.status === "pending");
}

function votesSoFar(approval) {
  return `${approval.decisions.filter((d) => d.approve).length} of ${approval.required_approvals} approvals so far`;
}

// One replay at a time: a double click, or a click on the button the panel redrew meanwhile,
// would start a second run (the page sends no Idempotency-Key; the API and the CLI take one).
let replaying = false;

async function replayFrom(nodeId, button) {
  if (replaying) return;
  replaying = true;
  button.disabled = true;
  try {
    const started = await api(`/runs/${runId}/nodes/${encodeURIComponent(nodeId)}/replay`, { method: "POST" });
    location.assign(`/runs/${started.run_id}/`);
  } catch (err) {
    replaying = false;
    button.disabled = false;
    showAlert($("run-alert"), `Replay refused: ${errorText(err)}`);
  }
}

// --- cancel and delete: each asks a second press within 5 s -----------------------------------

onSecondPress($("cancel-btn"), "Confirm: cancel this run", async () => {
  await api(`/runs/${runId}/cancel`, { method: "POST" });
}, (err) => showAlert($("run-alert"), `Not cancelled: ${errorText(err)}`));

// a finished run of the owner's: what their runs keep goes down (AOB_OWNER_STORAGE_BYTES)
onSecondPress($("delete-btn"), "Confirm: delete this run", async () => {
  // a 202 says its time ran out first: the same request goes on (a run of many rows)
  for (let tries = 0; tries < 20; tries += 1) {
    if (!(await api(`/runs/${runId}/delete`, { method: "POST" }))) {
      window.location.assign("/runs/");
      return;
    }
  }
  showAlert($("run-alert"), "Still deleting: press Delete run again to go on.");
}, (err) => showAlert($("run-alert"), `Not deleted: ${errorText(err)}`));

// --- events -------------------------------------------------------------------------------------

function summary(frame) {
  const d = frame.data || {};
  switch (frame.type) {
    case "node_failed": return (d.error && d.error.message) || d.message || "";
    case "approval_required": return d.warning ? `${d.message || ""} — ${d.warning}` : d.message || "";
    case "node_unserved": return d.message || `no running worker consumes ${d.queue}`;
    case "node_unclaimed": return d.message || `no worker claims it on ${d.queue}: sent again under a new id`;
    case "node_held": return `waiting for a slot: its owner runs ${d.limit} nodes of this type at once (AOB_OWNER_MAX_RUNNING)`;
    case "sweep_failed": return `the sweeper could not handle this (${d.sweep}, ${d.failures} time(s)): ${(d.error && d.error.message) || ""}`;
    case "approval_decided": return d.timeout ? `timed out: ${d.on_timeout}` : d.reason ? d.message || d.reason : `${d.user}: ${d.approve ? "approved" : "rejected"}${d.comment ? ` — “${d.comment}”` : ""}`;
    case "patch_applied": return `patch ${d.seq}: ${d.op_count} operation(s)${d.description ? ` — ${d.description}` : ""}`;
    case "patch_rejected": return d.reason || "";
    case "node_paused": return d.message || `paused: ${d.reason}`;
    case "notifications_capped": return d.message || `notifications capped at ${d.limit}`;
    case "approval_voided": return d.reopened ? "the approved action changed: asked again" : "the action changed: votes so far lapse";
    case "budget_raised": return d.above || d.raised_on
      ? `${d.by} raised the budget of ${d.above ? `the run ${d.above} above this one` : `run ${d.raised_on.slice(0, 8)}`}: resumed ${(d.resumed || []).join(", ")}`
      : `${d.by} raised the budget to $${d.budget.max_cost_usd ?? "(the run above's)"}, ${d.budget.max_tokens ?? "(the run above's)"} tokens`;
    case "budget_freed": return `the next model call fits again: resumed ${(d.resumed || []).join(", ")}`;
    case "workflow_failed": return (d.error && d.error.message) || d.message || "";
    case "condition_error": return `${d.loop ? `loop ${d.loop}` : `${d.from} → ${d.to}`}: ${d.error || ""} (counted as false)`;
    case "run_cancelled": return d.reason || "";
    case "run_moved": return `${(d.was || "").replaceAll("_", " ")} → ${(d.status || "").replaceAll("_", " ")}`;
    default: return "";
  }
}

// The list keeps the newest EVENTS_SHOWN events; older ones are read from the API, a page at a time.
const EVENTS_SHOWN = 1000;

// an event's data, drawn when its <details> is first opened
function dataBlock(frame) {
  const box = el("details", {}, el("summary", {}, "data"));
  box.addEventListener("toggle", () => {
    if (box.open && box.childElementCount === 1) box.append(jsonBlock(frame.data, `event ${frame.seq} data`));
  });
  return box;
}

function appendEvent(frame) {
  const list = $("events");
  const item = el("li", { class: `event t-${frame.type}`, "data-seq": frame.seq },
    el("span", { class: "seq" }, `#${frame.seq}`),
    el("time", { class: "when", datetime: frame.created_at, title: fmtTime(frame.created_at) },
      new Date(frame.created_at).toLocaleTimeString(undefined, { hour12: false }) + `.${String(new Date(frame.created_at).getMilliseconds()).padStart(3, "0")}`),
    el("span", { class: "etype" }, frame.type),
    frame.node_id ? el("button", { type: "button", class: "link", onclick: () => { showTab("graph"); select(frame.node_id, true); } }, frame.node_id) : el("span"),
    el("span", { class: "esummary" }, summary(frame)),
    Object.keys(frame.data || {}).length ? dataBlock(frame) : null);
  list.prepend(item);
  while (list.childElementCount > EVENTS_SHOWN) list.lastElementChild.remove();
  const before = Number(list.lastElementChild.dataset.seq) - 1;
  const older = $("events-older");
  older.hidden = before < 1;
  if (before >= 1 && older.dataset.before !== String(before)) {
    older.dataset.before = before;
    setChildren(older, `Events #1 to #${before} are not listed here: read them from `,
      el("a", { href: `/api/v1/runs/${runId}/events` }, "the API"), ", a page at a time (its Link header names the next), or with ",
      el("code", {}, `aob run watch ${runId}`), ".");
  }
  $("event-count").textContent = state.lastSeq;
}

// --- patches ------------------------------------------------------------------------------------

async function artifact(id) {
  if (!state.artifacts.has(id)) state.artifacts.set(id, api(`/artifacts/${encodeURIComponent(id)}`).then((a) => a.content));
  return state.artifacts.get(id);
}

function patchDecide(patch) {
  const approval = state.approvals.find((a) => a.kind === "patch" && a.patch_id === patch.id);
  if (!approval) return patch.status === "pending_approval" ? el("p", { class: "note" }, "Held for approval.") : null;
  const status = el("span", { class: "muted", role: "status", "aria-live": "polite" });
  const go = async (approve, buttons) => {
    buttons.forEach((b) => { b.disabled = true; });
    try {
      await api(`/approvals/${approval.id}/decide`, { method: "POST", body: { approve, comment: "" } });
      status.textContent = approve ? "Approved." : "Rejected.";
    } catch (err) {
      status.textContent = errorText(err);
      buttons.forEach((b) => { b.disabled = false; });
    }
  };
  const yes = el("button", { type: "button", class: "btn primary" }, "Apply patch");
  const no = el("button", { type: "button", class: "btn danger" }, "Reject patch");
  yes.addEventListener("click", () => go(true, [yes, no]));
  no.addEventListener("click", () => go(false, [yes, no]));
  return el("div", { class: "row approve-box" }, el("span", {}, messageOf(approval)), yes, no, status);
}

function renderRefusals() {
  const refusals = state.details.patch_refusals || [];
  const box = $("refusals");
  if (!refusals.length) {
    setChildren(box, el("p", { class: "empty" }, "No refused patches."));
    return;
  }
  setChildren(box, el("table", { class: "refusals" },
    el("thead", {}, el("tr", {}, ...["When", "By", "Rule", "Operation", "Why"].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, ...refusals.map((r) => el("tr", {},
      el("td", {}, timeEl(r.created_at)),
      el("td", {}, r.agent ? `agent ${r.node_id}` : (r.proposed_by || "a person")),
      el("td", {}, el("code", { class: "rule" }, r.rule)),
      el("td", { class: "mono" }, r.op === null ? "—" : `#${r.op} ${r.path || ""}`),
      el("td", {}, r.message))))));
}

// A patch's operations, or (past the list's byte budget) a button that reads them from the patch.
function operationsBlock(p) {
  const ops = p.operations;
  if (Array.isArray(ops) || !(ops && ops.truncated)) return el("pre", { class: "json", tabindex: "0" }, pretty(ops));
  const box = el("div", {});
  const load = el("button", { type: "button", class: "btn small" }, "Show them");
  load.addEventListener("click", async () => {
    load.disabled = true;
    try {
      const whole = await api(`/runs/${runId}/patches/${p.seq}`);
      setChildren(box, el("pre", { class: "json", tabindex: "0" }, pretty(whole.operations)));
    } catch (err) {
      setChildren(box, el("p", { class: "alert" }, errorText(err)));
      load.disabled = false;
    }
  });
  setChildren(box, el("p", { class: "muted" }, `Too large to list (${ops.bytes} bytes). `, load));
  return box;
}

const PATCHES_PAGE = 50;

async function renderPatches() {
  renderRefusals();
  const patches = state.details.patches;
  const key = `${state.details.patches_count}|` + patches.map((p) => `${p.id}:${p.status}`).join(",")
    + `|${state.approvals.map((a) => a.id).join(",")}`;
  if (key === state.patchesKey) return;
  state.patchesKey = key;
  const box = $("patches");
  if (!patches.length) {
    setChildren(box, el("p", { class: "empty" }, "No patches to this run."));
    return;
  }
  try {
    setChildren(box, ...await patchCards(0));
  } catch (err) {
    setChildren(box, el("p", { class: "alert" }, errorText(err)));
  }
}

// One page of GET /runs/{id}/patches as cards, and a button that adds the next page in its place.
async function patchCards(offset) {
  const page = await api(`/runs/${runId}/patches?limit=${PATCHES_PAGE}&offset=${offset}`);
  const cards = [];
  for (const p of page.results) {
    const [before, after] = await Promise.all([artifact(p.before_artifact_id), artifact(p.artifact_id)]).catch(() => [null, null]);
    const beforeBox = el("div", { class: "graph small" });
    const afterBox = el("div", { class: "graph small" });
    if (before && after) {
      const b = graphOf(before);
      const a = graphOf(after);
      const beforeIds = new Set(b.nodes.map((n) => n.id));
      const afterIds = new Set(a.nodes.map((n) => n.id));
      renderGraph(beforeBox, before, { label: `Before patch ${p.seq}`, nodeState: (id) => ({ removed: !afterIds.has(id) }) });
      renderGraph(afterBox, after, { label: `After patch ${p.seq}`, nodeState: (id) => ({ patched: !beforeIds.has(id) }) });
    }
    cards.push(el("article", { class: "card patch" },
      el("h3", {}, `Patch ${p.seq} `, badge(p.status), p.node_id ? el("span", { class: "muted" }, ` by node ${p.node_id}`) : ""),
      p.description ? el("p", {}, listedText(p.description,
        async () => (await api(`/runs/${runId}/patches/${p.seq}`)).description)) : null,
      p.reason ? el("p", { class: "alert" }, p.reason) : null,
      patchDecide(p),
      el("h4", {}, `Operations (${p.op_count})`), operationsBlock(p),
      el("div", { class: "before-after" },
        el("figure", {}, el("figcaption", {}, "Before"), beforeBox),
        el("figure", {}, el("figcaption", {}, "After"), afterBox))));
  }
  if (page.next) {
    const following = offset + page.results.length;
    const more = el("button", { type: "button", class: "btn" }, `More patches (${page.count - following} left)`);
    more.addEventListener("click", async () => {
      more.disabled = true;
      try {
        more.replaceWith(...await patchCards(following));
      } catch (err) {
        more.disabled = false;
        more.after(el("p", { class: "alert" }, errorText(err)));
      }
    });
    cards.push(more);
  }
  return cards;
}

// --- tabs ---------------------------------------------------------------------------------------

const TABS = ["graph", "timeline", "patches", "events"];

function showTab(name) {
  for (const t of TABS) {
    const tab = $(`tab-${t}`);
    const on = t === name;
    tab.setAttribute("aria-selected", on ? "true" : "false");
    tab.tabIndex = on ? 0 : -1;
    $(`panel-${t}`).hidden = !on;
  }
}

TABS.forEach((t, i) => {
  const tab = $(`tab-${t}`);
  tab.addEventListener("click", () => showTab(t));
  tab.addEventListener("keydown", (ev) => {
    const step = ev.key === "ArrowRight" ? 1 : ev.key === "ArrowLeft" ? -1 : 0;
    if (!step) return;
    const next = TABS[(i + step + TABS.length) % TABS.length];
    showTab(next);
    $(`tab-${next}`).focus();
  });
});

// --- start --------------------------------------------------------------------------------------

refresh();
new LiveSocket(() => `/ws/runs/${runId}/?after=${state.lastSeq}`, {
  onFrame,
  onState: (s, wait) => {
    const live = $("live");
    live.textContent = liveLabel(s, wait);
    live.className = `live ${s}`;
    // Back after a gap: the replay brings the missed events, and with them a refresh.
    if (s === "live" && state.details) refresh();
  },
});
