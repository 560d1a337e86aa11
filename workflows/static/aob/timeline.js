// A run's timeline as Gantt bars, from GET /runs/{id}/timeline: one row per node run (each loop
// iteration its own row), the wait in the queue and the run time drawn apart, each attempt of a
// retried node as its own segment (failed ones marked). Plain HTML, so it reads without a picture.
import { el, setChildren } from "./api.js";

export function fmtMs(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(2)} s`;
  return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
}

function pct(ms, span) {
  return `${Math.max(0, Math.min(100, (100 * ms) / span)).toFixed(3)}%`;
}

function bar(cls, from, to, span, title) {
  const width = Math.max(to - from, 0);
  return el("span", { class: `tl-bar ${cls}`, style: `left:${pct(from, span)};width:max(2px, ${pct(width, span)})`, title });
}

function row(item, span) {
  const label = item.iteration ? `${item.node_id} #${item.iteration}` : item.node_id;
  const bars = [];
  const end = item.finished_ms ?? (item.started_ms !== null ? item.started_ms + (item.run_ms || 0) : null);
  if (item.queued_ms !== null && item.started_ms !== null) {
    bars.push(bar("wait", item.queued_ms, item.started_ms, span, `${label}: waited ${fmtMs(item.queue_wait_ms)} in the queue`));
  }
  const attempts = (item.attempt_log || []).filter((a) => a.start_ms !== null && a.duration_ms !== null);
  if (attempts.length > 1) {
    for (const a of attempts) {
      bars.push(bar(`run attempt s-${a.status}`, a.start_ms, a.start_ms + a.duration_ms, span,
        `${label}: attempt ${a.attempt} ${a.status} after ${fmtMs(a.duration_ms)}${a.error ? ` — ${a.error}` : ""}`));
    }
  } else if (item.started_ms !== null && end !== null) {
    bars.push(bar(`run s-${item.status}`, item.started_ms, end, span, `${label}: ${item.status} after ${fmtMs(item.run_ms)}`));
  } else if (item.queued_ms !== null && item.status === "queued") {
    bars.push(bar("wait", item.queued_ms, span, span, `${label}: queued`));
  }
  const facts = [`wait ${fmtMs(item.queue_wait_ms)}`, `ran ${fmtMs(item.run_ms)}`];
  if (item.attempts > 1) facts.push(`${item.attempts} attempts`);
  if (item.waiting_for) {  // the server's words (NodeRun.WAITING_FOR)
    facts.push(`waiting for ${item.waiting_for}`);
  }
  return el("tr", { "data-node": item.node_id, "data-iteration": String(item.iteration), "data-status": item.status },
    el("th", { scope: "row", class: "mono" }, label),
    el("td", {}, el("span", { class: `badge s-${item.status}` }, item.status)),
    el("td", { class: "tl-track" }, bars),
    el("td", { class: "tl-facts" }, facts.join(" · ")));
}

export function renderTimeline(container, timeline) {
  const span = Math.max(1, timeline.span_ms || 1);
  const items = timeline.items || [];
  if (!items.length) {
    setChildren(container, el("p", { class: "empty" }, "Nothing has been queued yet."));
    return;
  }
  setChildren(container,
    el("p", { class: "muted" }, `From submission to ${timeline.finished_at ? "the end" : "now"}: ${fmtMs(timeline.span_ms)}. `,
      el("span", { class: "tl-key wait" }), " waiting in the queue ", el("span", { class: "tl-key run" }), " running",
      timeline.truncated ? " · only the first node runs are shown" : ""),
    el("table", { class: "table tl", "aria-label": "Timeline of the node runs" },
      el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Node"), el("th", { scope: "col" }, "Status"),
        el("th", { scope: "col" }, `0 → ${fmtMs(span)}`), el("th", { scope: "col" }, "Times"))),
      el("tbody", {}, items.map((item) => row(item, span)))));
}
