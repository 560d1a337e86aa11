// The runs list follows ws/events/: a frame about a run in the table re-reads that run's row
// (status, duration, error).
import { LiveSocket, api, el, errorText, onSecondPress, setChildren, shown, stringifyJson } from "./api.js";
import { fmtMs } from "./timeline.js";

const table = document.getElementById("runs-table");
const note = document.getElementById("runs-live");
const STATUS_EVENTS = new Set(["workflow_started", "approval_required", "approval_decided", "workflow_completed",
  "workflow_failed", "run_cancelled", "node_started", "run_moved"]);
const pending = new Set();

async function update(runId) {
  if (pending.has(runId)) return;
  pending.add(runId);
  try {
    const run = await api(`/runs/${runId}`);
    const row = table && table.querySelector(`tr[data-run="${run.run_id}"]`);
    if (!row) return;
    const badge = row.querySelector('[data-field="status"]');
    badge.textContent = run.status;
    badge.className = `badge s-${run.status}`;
    const duration = row.querySelector('[data-field="duration"]');
    if (duration) duration.textContent = run.duration_ms === null ? "" : fmtMs(run.duration_ms);
    const error = row.querySelector('[data-field="error"]');
    if (error && run.error) error.textContent = shown(run.error.message || stringifyJson(run.error));
  } catch {
    // The run may be gone or not ours; the row keeps what it showed.
  } finally {
    pending.delete(runId);
  }
}

new LiveSocket(() => "/ws/events/", {
  onFrame: (frame) => {
    if (!STATUS_EVENTS.has(frame.type)) return;
    const known = table && table.querySelector(`tr[data-run="${frame.run_id}"]`);
    if (known) update(frame.run_id);
    else if (frame.type === "workflow_started") {
      setChildren(note, "A new run started. ", el("a", { href: location.pathname + location.search }, "Show it"));
    }
  },
  onState: (s) => { if (s === "unauthorised") note.textContent = "Live updates stopped: log in again."; },
});

// Delete the caller's finished runs the page's filters choose (POST /runs/delete, the same filters):
// the first press counts them (its dry run) and a second confirms; a 202 says its time ran out first,
// and the same request goes on.
const deleteButton = document.getElementById("delete-matching");
if (deleteButton) {
  const filters = JSON.parse(document.getElementById("delete-filters").textContent);
  const status = document.getElementById("delete-matching-status");
  let deleted = 0;
  const count = (preview, name) => `${preview.at_least.includes(name) ? "at least " : ""}${preview[name]}`;
  const confirmLabel = async () => {
    const preview = await api("/runs/delete", { method: "POST", body: { ...filters, dry_run: true } });
    status.textContent = preview.kept ? `${count(preview, "kept")} stay, as an unfinished run reads each.` : "";
    if (!preview.would_delete) {
      status.textContent = "Nothing to delete: " + (status.textContent || "no finished run of yours matches.");
      return null;
    }
    const runs = `${count(preview, "would_delete")} run${preview.would_delete === 1 ? "" : "s"}`;
    return `Confirm: delete ${runs}, with their node runs, events and approvals`;
  };
  onSecondPress(deleteButton, confirmLabel, async () => {
    deleted = 0;
    for (let idle = 0; idle < 20;) {  // requests that deleted nothing (the rows held by another request)
      const answer = await api("/runs/delete", { method: "POST", body: filters });
      deleted += answer.deleted;
      idle = answer.deleted ? 0 : idle + 1;
      status.textContent = `${deleted} deleted…`;
      if (answer.finished) {
        status.textContent = `${deleted} deleted` + (answer.kept ? `; ${answer.kept} stay, as an unfinished run reads each` : "") + ".";
        setTimeout(() => window.location.reload(), 1500);
        return;
      }
    }
    status.textContent = `${deleted} deleted; the rest are still being deleted: press again to go on.`;
  }, (err) => { status.textContent = `${deleted} deleted, then: ${errorText(err)}`; });
}
