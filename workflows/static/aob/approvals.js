// The approvals inbox: what I can decide now, with its context. Follows ws/events/: an
// inbox_changed frame (an approval naming me changed, on anyone's run: it says nothing more), or
// an approval's or a run's end among my own runs' events, re-reads the list, and so does the socket
// opening again (what changed while it was closed). Cards stay put across re-reads, so a
// half-typed comment survives; a re-read that brings new votes redraws what the card says around its
// form, and one whose action a patch changed (its action_digest moved) redraws the whole card: the
// form drawn for the old action is refused (action_changed), and what was typed was about that one.
import { LiveSocket, actionChangedNote, api, decisionForm, el, errorText, jsonBlock, messageOf, setChildren, setSiblings, showAlert, shown, stringifyJson, timeEl } from "./api.js";

const inbox = document.getElementById("inbox");
const alertBox = document.getElementById("inbox-alert");
// Anyone may name anyone as an approver: the list takes the askers in turn, and this narrows it to one.
const askedBy = document.getElementById("f-asked-by");
const countLine = document.getElementById("inbox-count");
const PAGE = 200;
const cards = new Map();
let inflight = false;
let dirty = false;

function contextBlock(a) {
  const ctx = a.context || {};
  if (ctx.truncated && ctx.href) {  // past the list's byte budget: the approval's own page shows it
    return el("p", { class: "muted" }, `The context (${ctx.bytes} bytes) is too large for this list: `,
      el("a", { href: `/approvals/${a.id}/` }, "read it on the approval's page"), ".");
  }
  if (a.kind === "patch") {
    const names = (g) => (g && g.nodes ? g.nodes.map((n) => n.id).join(", ") : "");
    return el("div", {},
      el("p", {}, el("strong", {}, "Nodes before: "), names(ctx.before)),
      el("p", {}, el("strong", {}, "Nodes after: "), names(ctx.after)),
      el("h3", {}, "Operations"), jsonBlock(ctx.operations || [], "patch operations"));
  }
  return el("details", { open: true }, el("summary", {}, "Context: inputs and upstream outputs"),
    jsonBlock(ctx, `context of approval ${a.id}`));
}

// What a card says of an approval, but its form: redrawn when a re-read brings news (``drawn``).
function said(a) {
  const approvals = a.decisions.filter((d) => d.approve).length;
  const headingId = `approval-${a.id}-h`;
  return [
    el("h2", { id: headingId }, messageOf(a, a.kind === "patch" ? "A patch to approve" : "Approve?")),
    el("p", { class: "muted" },
      `${a.kind === "patch" ? "Patch" : "Node"} `, el("span", { class: "mono" }, a.node_id || "—"),
      " of run ", el("a", { class: "mono", href: `/runs/${a.run_id}/` }, a.run_id.slice(0, 8)),
      " · asked by ", el("strong", { "data-field": "asked-by" }, shown(a.asked_by)),
      " · asked ", timeEl(a.created_at),
      a.deadline ? [" · deadline ", timeEl(a.deadline), a.on_timeout ? ` (then ${a.on_timeout})` : ""] : "",
      // past the page's byte budget the list answers a marker (the approval's own page has them)
      Array.isArray(a.approvers) ? ` · approvers ${a.approvers.join(", ")}` : " · approvers: see details",
      a.required_approvals > 1 ? ` · ${approvals} of ${a.required_approvals} approvals` : "",
      a.escalated ? " · escalated" : "",
      " · ", el("a", { href: `/approvals/${a.id}/` }, "details and notifications")),
    actionChangedNote(a),
    contextBlock(a),
  ];
}

// What a re-read compares: the action asked about (a patch moves its digest), the votes, the deadline
// (a reopened gate's starts again) and the escalation.
const drawn = (a) => stringifyJson([a.action_digest ?? null, a.decisions.map((d) => [d.user, d.approve]),
  a.deadline ?? null, Boolean(a.escalated)]);

function card(a) {
  const form = decisionForm(a, { onDecided: load });
  const node = el("article", { class: "card approval", "aria-labelledby": `approval-${a.id}-h`, "data-approval": a.id },
    said(a), form);
  return { node, form, digest: a.action_digest ?? null, drawn: drawn(a) };
}

// The card of an approval as this read says it; its form (and what is typed in it) is
// kept while it is about the same action.
function cardOf(a) {
  const had = cards.get(a.id);
  if (!had) {
    cards.set(a.id, card(a));
  } else if (had.digest !== (a.action_digest ?? null)) {
    const fresh = card(a);
    had.node.replaceWith(fresh.node);
    cards.set(a.id, fresh);
  } else if (had.drawn !== drawn(a)) {
    setSiblings(had.form, said(a), []);
    had.drawn = drawn(a);
  }
  return cards.get(a.id).node;
}

async function load() {
  if (inflight) { dirty = true; return; }
  inflight = true;
  try {
    do {
      dirty = false;
      const who = askedBy.value;
      const data = await api(`/approvals?status=pending&limit=${PAGE}${who ? `&asked_by=${encodeURIComponent(who)}` : ""}`);
      showAskers(data.results, who);
      countLine.textContent = data.count > data.results.length
        ? `${data.results.length} of ${data.count} shown, the askers in turn (each one's soonest deadline first)` : "";
      const ids = new Set(data.results.map((a) => a.id));
      for (const [id, shownCard] of cards) if (!ids.has(id)) { shownCard.node.remove(); cards.delete(id); }
      const ordered = data.results.map(cardOf);
      if (!ordered.length) {
        setChildren(inbox, el("p", { class: "empty" }, "Nothing to decide right now."));
      } else {
        // Re-append in order; existing elements move, keeping what was typed into them.
        for (const child of [...inbox.children]) if (!child.dataset.approval) child.remove();
        ordered.forEach((node) => inbox.append(node));
      }
      showAlert(alertBox, "");
    } while (dirty);
  } catch (err) {
    showAlert(alertBox, `Could not load the approvals: ${errorText(err)}`);
  } finally {
    inflight = false;
  }
}

// The askers the list has shown, kept as options while the page stays open (a filtered list shows one).
const askers = new Set();

function showAskers(results, chosen) {
  const before = askers.size;
  for (const a of results) askers.add(a.asked_by);
  if (chosen) askers.add(chosen);
  if (askers.size === before) return;
  const options = [...askers].sort().map((name) => el("option", { value: name }, shown(name)));
  setChildren(askedBy, el("option", { value: "" }, "anyone"), ...options);
  askedBy.value = chosen;
}

askedBy.addEventListener("change", () => load());
load();
new LiveSocket(() => "/ws/events/", {
  onFrame: (frame) => {
    if (frame.type === "inbox_changed" || frame.type === "approval_required" || frame.type === "approval_decided"
        || frame.type === "approval_voided" || frame.type === "run_cancelled" || frame.type === "workflow_failed"
        || frame.type === "workflow_completed") load();
  },
  // each open, the first too: the socket hears nudges once the server has joined its groups, and
  // a gate that asked between the page's first read and that missed both (the inbox said nothing
  // to decide, for good); again after a reconnect, for the nudges sent while it was closed
  onState: (s) => { if (s === "live") load(); },
});
