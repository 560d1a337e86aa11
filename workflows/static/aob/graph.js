// A workflow definition drawn as an SVG: layered left to right (longest path from the sources,
// back edges reversed for the layering, barycentre ordering within layers), computed here from the DAG.

import { textNode } from "./api.js";

const SVG = "http://www.w3.org/2000/svg";
const W = 168;
const H = 54;
const BASE_GAP_X = 100;
const GAP_Y = 26;
const PAD = 22;

// s("rect", {x: 1}, "text", child, ...): an SVG element, its text as el() makes it (api.js)
export function s(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v);
  for (const c of children) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : textNode(c));
  return node;
}

function truncate(text, n) {
  text = String(text);
  return text.length > n ? `${text.slice(0, n - 1)}…` : text;
}

// Nodes and edges of a definition, including the loop node's implicit edges (its config names them).
export function graphOf(definition) {
  const nodes = [];
  const ids = new Set();
  for (const n of (definition && Array.isArray(definition.nodes)) ? definition.nodes : []) {
    if (!n || typeof n.id !== "string" || ids.has(n.id)) continue;
    ids.add(n.id);
    nodes.push({ id: n.id, type: typeof n.type === "string" ? n.type : "?" , config: n.config || {} });
  }
  const edges = [];
  for (const e of (definition && Array.isArray(definition.edges)) ? definition.edges : []) {
    if (e && ids.has(e.from) && ids.has(e.to)) edges.push({ from: e.from, to: e.to, label: e.condition || "", kind: "edge" });
  }
  for (const n of nodes) {
    if (n.type !== "loop") continue;
    for (const [key, label] of LOOP_KEYS) {
      for (const to of loopTargets(n.config[key])) if (ids.has(to)) edges.push({ from: n.id, to, label, kind: "implicit" });
    }
  }
  return { nodes, edges };
}

// A loop's jump back and exits, each drawn with its label: the engine's LOOP_KEYS
// (workflows/definition/validation.py), in its order.
export const LOOP_KEYS = [["loop_back_to", "repeat"], ["break_path", "done"], ["timeout_path", "timeout"]];

// One node id, or a list of them (all followed), as the engine reads them (validation.loop_targets);
// tests/web/test_browser.py holds the two readings side by side.
export function loopTargets(value) {
  if (typeof value === "string") return value ? [value] : [];
  return Array.isArray(value) ? value.filter((v) => typeof v === "string" && v) : [];
}

export function layout({ nodes, edges }) {
  // Room between layers for the longest edge label, so labels are drawn whole.
  const longest = Math.max(0, ...edges.map((e) => (e.label || "").length));
  const GAP_X = Math.max(BASE_GAP_X, Math.min(480, longest * 6.7 + 40));
  const out = new Map(nodes.map((n) => [n.id, []]));
  for (const e of edges) out.get(e.from).push(e);
  // Back edges: found by a depth-first search in authoring order.
  const state = new Map();
  const back = new Set();
  const visit = (id) => {
    state.set(id, 1);
    for (const e of out.get(id)) {
      const st = state.get(e.to);
      if (st === 1) back.add(e);
      else if (!st) visit(e.to);
    }
    state.set(id, 2);
  };
  const indeg = new Map(nodes.map((n) => [n.id, 0]));
  for (const e of edges) indeg.set(e.to, indeg.get(e.to) + 1);
  for (const n of nodes) if (!state.get(n.id) && indeg.get(n.id) === 0) visit(n.id);
  for (const n of nodes) if (!state.get(n.id)) visit(n.id);
  const forward = edges.filter((e) => !back.has(e) && e.from !== e.to);
  // Longest-path layering over the forward edges (Kahn's order).
  const layer = new Map(nodes.map((n) => [n.id, 0]));
  const remaining = new Map(nodes.map((n) => [n.id, 0]));
  for (const e of forward) remaining.set(e.to, remaining.get(e.to) + 1);
  const queue = nodes.filter((n) => remaining.get(n.id) === 0).map((n) => n.id);
  while (queue.length) {
    const id = queue.shift();
    for (const e of forward.filter((f) => f.from === id)) {
      layer.set(e.to, Math.max(layer.get(e.to), layer.get(id) + 1));
      remaining.set(e.to, remaining.get(e.to) - 1);
      if (remaining.get(e.to) === 0) queue.push(e.to);
    }
  }
  const layers = [];
  for (const n of nodes) (layers[layer.get(n.id)] ||= []).push(n.id);
  // Order within layers: a few barycentre sweeps, down then up.
  const pos = new Map();
  const index = () => layers.forEach((ids) => ids.forEach((id, i) => pos.set(id, i)));
  index();
  const preds = (id) => forward.filter((e) => e.to === id).map((e) => e.from);
  const succs = (id) => forward.filter((e) => e.from === id).map((e) => e.to);
  const bary = (id, neighbours) => {
    const ns = neighbours(id);
    return ns.length ? ns.reduce((a, n) => a + pos.get(n), 0) / ns.length : pos.get(id);
  };
  for (let sweep = 0; sweep < 4; sweep++) {
    const down = sweep % 2 === 0;
    const order = down ? layers.slice(1) : layers.slice(0, -1).reverse();
    for (const ids of order) {
      const keyed = ids.map((id) => [bary(id, down ? preds : succs), pos.get(id), id]);
      keyed.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
      ids.splice(0, ids.length, ...keyed.map((k) => k[2]));
      index();
    }
  }
  const tallest = Math.max(1, ...layers.map((ids) => (ids || []).length));
  const height = tallest * H + (tallest - 1) * GAP_Y;
  const coords = new Map();
  layers.forEach((ids, li) => {
    const span = ids.length * H + (ids.length - 1) * GAP_Y;
    ids.forEach((id, i) => coords.set(id, {
      x: PAD + li * (W + GAP_X), y: PAD + (height - span) / 2 + i * (H + GAP_Y), layer: li,
    }));
  });
  return {
    coords, back,
    width: PAD * 2 + Math.max(1, layers.length) * W + Math.max(0, layers.length - 1) * GAP_X,
    height: PAD * 2 + height + (back.size ? 40 : 0),
  };
}

// Draw ``definition`` into ``container``. options: nodeState(id) -> {status, patched, current, removed},
// selected (id), onSelect(id), label (accessible name of the picture).
export function renderGraph(container, definition, options = {}) {
  const graph = graphOf(definition);
  // A redraw must not steal keyboard focus: refocus the node that had it.
  const active = document.activeElement;
  const focused = active && container.contains(active) ? active.getAttribute("data-node") : null;
  container.textContent = "";
  if (!graph.nodes.length) {
    container.append(Object.assign(document.createElement("p"), { className: "empty", textContent: "No nodes." }));
    return;
  }
  const { coords, back, width, height } = layout(graph);
  const uid = Math.random().toString(36).slice(2, 8);
  const svg = s("svg", {
    viewBox: `0 0 ${width} ${height}`, width, height, role: "group",
    "aria-label": options.label || "Workflow graph", class: "dag",
    // Shrinks to fit its box, but not below 85% of its size (then the box scrolls): text stays readable.
    style: `min-width: ${Math.round(width * 0.85)}px`,
  });
  svg.append(s("defs", {},
    s("marker", { id: `arrow-${uid}`, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
      s("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow" }))));
  const edgeLayer = s("g", { class: "edges" });
  const labelLayer = s("g", { class: "edge-labels" });
  for (const e of graph.edges) {
    const a = coords.get(e.from);
    const b = coords.get(e.to);
    let d;
    let lx;
    let ly;
    if (back.has(e) || b.layer <= a.layer) {
      // Route a back edge (a loop) under the nodes.
      const y0 = a.y + H;
      const y1 = b.y + H;
      const bottom = Math.max(y0, y1) + 34;
      d = `M${a.x + W / 2},${y0} C${a.x + W / 2},${bottom} ${b.x + W / 2},${bottom} ${b.x + W / 2},${y1 + 1}`;
      lx = (a.x + b.x + W) / 2;
      ly = bottom - 6;
    } else {
      const x0 = a.x + W;
      const y0 = a.y + H / 2;
      const x1 = b.x;
      const y1 = b.y + H / 2;
      const mid = (x0 + x1) / 2;
      d = `M${x0},${y0} C${mid},${y0} ${mid},${y1} ${x1 - 2},${y1}`;
      lx = mid;
      ly = (y0 + y1) / 2 - 5;
    }
    const removedEdge = options.edgeState ? options.edgeState(e) : "";
    edgeLayer.append(s("path", { d, class: `edge ${e.kind} ${removedEdge || ""}`, "marker-end": `url(#arrow-${uid})` },
      s("title", {}, `${e.from} → ${e.to}${e.label ? ` when ${e.label}` : ""}`)));
    if (e.label) {
      const text = e.label;
      const t = s("text", { x: lx, y: ly, class: "edge-label", "text-anchor": "middle" }, text);
      labelLayer.append(s("rect", { x: lx - text.length * 3.35 - 5, y: ly - 11, width: text.length * 6.7 + 10, height: 15, rx: 3, class: "edge-label-bg" }), t);
    }
  }
  svg.append(edgeLayer, labelLayer);
  for (const n of graph.nodes) {
    const { x, y } = coords.get(n.id);
    const st = options.nodeState ? options.nodeState(n.id) || {} : {};
    const status = st.status || "";
    const classes = ["node", status ? `s-${status}` : "plain", st.patched && "patched", st.current && "current",
      st.removed && "removed", options.selected === n.id && "selected"].filter(Boolean).join(" ");
    const described = [`${n.id}`, `type ${n.type}`, status && `status ${status}`, st.patched && "added by a patch",
      st.current && "current", st.removed && "removed by the patch"].filter(Boolean).join(", ");
    const g = s("g", { class: classes, transform: `translate(${x},${y})`, "data-node": n.id, "data-status": status || null });
    if (options.onSelect) {
      g.setAttribute("tabindex", "0");
      g.setAttribute("role", "button");
      g.setAttribute("aria-pressed", options.selected === n.id ? "true" : "false");
      g.addEventListener("click", () => options.onSelect(n.id));
      g.addEventListener("keydown", (ev) => {
        if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); options.onSelect(n.id); }
      });
    } else {
      g.setAttribute("role", "img");
    }
    g.setAttribute("aria-label", described);
    g.append(s("title", {}, described));
    g.append(s("rect", { width: W, height: H, rx: 9, class: "box" }));
    g.append(s("text", { x: 12, y: 22, class: "node-id" }, truncate(n.id, 19)));
    g.append(s("text", { x: 12, y: 41, class: "node-sub" }, truncate(status ? `${n.type} · ${status.replace("_", " ")}` : n.type, 24)));
    if (st.patched) g.append(s("text", { x: W - 8, y: 14, class: "node-tag", "text-anchor": "end" }, "+patch"));
    if (st.removed) g.append(s("text", { x: W - 8, y: 14, class: "node-tag", "text-anchor": "end" }, "removed"));
    svg.append(g);
  }
  container.append(svg);
  if (focused) {
    const target = svg.querySelector(`[data-node="${CSS.escape(focused)}"]`);
    if (target) target.focus();
  }
}
