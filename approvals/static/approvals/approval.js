// One approval: its message and context, the decide form (when it waits for me), and the
// notifications sent about it (who, which channel, the outcome).
import { actionChangedNote, api, decisionForm, el, errorText, jsonBlock, pageData, setChildren, showAlert, timeEl } from "/static/aob/api.js";

const { approval_id: id } = pageData();
const box = document.getElementById("approval");
const alertBox = document.getElementById("approval-alert");
const deliveries = document.querySelector("#deliveries tbody");
const capped = document.getElementById("deliveries-capped");

function render(a) {
  document.getElementById("approval-status").textContent = a.status;
  setChildren(box, el("article", { class: "card approval" },
    el("h2", {}, a.message || "Approve?"),
    el("p", { class: "muted" }, "asked by ", el("strong", { "data-field": "asked-by" }, a.asked_by), ` · approvers ${a.approvers.join(", ")}`,
      a.deadline ? [" · deadline ", timeEl(a.deadline)] : ""),
    actionChangedNote(a),
    el("details", { open: true }, el("summary", {}, "Context"), jsonBlock(a.context || {}, "approval context")),
    a.status === "pending" ? decisionForm(a, { onDecided: load }) : el("p", {}, `Decided: ${a.status}.`)));
  setChildren(deliveries, (a.deliveries || []).map((d) => el("tr", {},
    el("td", {}, d.recipient), el("td", {}, d.channel), el("td", {}, d.reason),
    el("td", {}, d.status, d.error ? el("span", { class: "muted" }, ` (${d.error})`) : ""),
    el("td", {}, String(d.attempts)), el("td", {}, timeEl(d.sent_at || d.created_at)))));
  capped.hidden = !a.notifications_not_sent;
  capped.textContent = a.notifications_not_sent
    ? `${a.notifications_not_sent} notification(s) not sent: this run reached its limit (AOB_MAX_NOTIFICATIONS_PER_RUN). `
      + "The approval waits in its approvers' inboxes all the same."
    : "";
}

async function load() {
  try {
    render(await api(`/approvals/${id}`));
    showAlert(alertBox, "");
  } catch (err) {
    showAlert(alertBox, `Could not load the approval: ${errorText(err)}`);
  }
}

load();
