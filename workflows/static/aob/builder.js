// The visual builder: the definition as a canvas you edit with the mouse or the keyboard, kept
// equal to the JSON view. A palette of the registry's node types (GET /node-types) to drag onto the
// canvas (or click), nodes to move, a port on each node to drag to another (an edge), an edge to
// click for its condition, a config form generated from the node type's JSON Schema, validation
// errors beside their node, zoom / fit / pan and auto-layout. Positions live in metadata.layout.
import { el, numberOf, parseJson, setChildren, stringifyJson } from "./api.js";
import { LOOP_KEYS, graphOf, layout, s } from "./graph.js";

const W = 168;
const H = 54;
const LONG_TEXT = new Set(["expression", "message", "task", "prompt", "condition"]);

const clone = (v) => parseJson(stringifyJson(v));

// A validation problem's JSON Pointer, as the node or edge it is about.
export function problemTarget(path, definition) {
  const m = /^\/(nodes|edges)\/(\d+)(\/.*)?$/.exec(path || "");
  if (!m) return null;
  const list = (definition && definition[m[1]]) || [];
  const item = list[Number(m[2])];
  if (!item) return null;
  return m[1] === "nodes" ? { node: item.id, rest: m[3] || "" } : { edge: Number(m[2]), rest: m[3] || "" };
}

export class Builder {
  constructor(root, { catalogue, references, onChange }) {
    this.root = root;
    this.types = new Map((catalogue || []).map((t) => [t.type, t]));
    this.references = references || {};
    this.onChange = onChange;
    this.def = { nodes: [], edges: [] };
    this.selected = null; // {node: id} | {edge: index}
    this.problems = [];
    this.view = { k: 1, tx: 0, ty: 0 };
    this.fitted = false;
    this.build();
  }

  // --- frame ----------------------------------------------------------------------------------

  build() {
    this.palette = el("div", { class: "palette", role: "toolbar", "aria-label": "Node types: drag one onto the canvas, or click to add" });
    for (const t of this.types.values()) {
      const chip = el("button", { type: "button", class: "palette-item", draggable: "true", "data-type": t.type,
        title: t.description, "aria-label": `Add a ${t.type} node` }, t.type);
      chip.addEventListener("dragstart", (ev) => {
        ev.dataTransfer.setData("application/x-aob-node-type", t.type);
        ev.dataTransfer.setData("text/plain", t.type);
        ev.dataTransfer.effectAllowed = "copy";
      });
      chip.addEventListener("click", () => this.addNode(t.type, null));
      this.palette.append(chip);
    }
    const tool = (label, title, fn) => el("button", { type: "button", class: "btn small", title, onclick: fn }, label);
    this.tools = el("div", { class: "builder-tools" },
      tool("−", "Zoom out", () => this.zoom(1 / 1.25)), tool("+", "Zoom in", () => this.zoom(1.25)),
      tool("Fit", "Fit the graph in view", () => this.fit()),
      tool("Auto-layout", "Lay the nodes out left to right", () => this.autoLayout()));
    this.svg = s("svg", { class: "builder-canvas", role: "application", "aria-label": "Workflow canvas", tabindex: "0" });
    this.viewport = s("g", { class: "viewport" });
    this.svg.append(s("defs", {}, s("marker", { id: "b-arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7,
      markerHeight: 7, orient: "auto-start-reverse" }, s("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow" }))), this.viewport);
    this.inspector = el("aside", { class: "inspector", "aria-label": "Selected node or edge", "aria-live": "polite" });
    setChildren(this.root, this.palette, this.tools,
      el("div", { class: "builder-body" }, el("div", { class: "canvas-box" }, this.svg), this.inspector));
    this.wire();
  }

  wire() {
    const svg = this.svg;
    svg.addEventListener("dragover", (ev) => { ev.preventDefault(); ev.dataTransfer.dropEffect = "copy"; });
    svg.addEventListener("drop", (ev) => {
      ev.preventDefault();
      const type = ev.dataTransfer.getData("application/x-aob-node-type") || ev.dataTransfer.getData("text/plain");
      if (this.types.has(type)) this.addNode(type, this.toWorld(ev.clientX, ev.clientY));
    });
    svg.addEventListener("wheel", (ev) => {
      ev.preventDefault();
      this.zoom(ev.deltaY < 0 ? 1.1 : 1 / 1.1, this.toLocal(ev.clientX, ev.clientY));
    }, { passive: false });
    svg.addEventListener("pointerdown", (ev) => this.pointerDown(ev));
    svg.addEventListener("keydown", (ev) => {
      if ((ev.key === "Delete" || ev.key === "Backspace") && this.selected) { ev.preventDefault(); this.removeSelected(); }
    });
  }

  // --- coordinates ----------------------------------------------------------------------------

  toLocal(clientX, clientY) {
    const r = this.svg.getBoundingClientRect();
    return { x: clientX - r.left, y: clientY - r.top };
  }

  toWorld(clientX, clientY) {
    const p = this.toLocal(clientX, clientY);
    return { x: (p.x - this.view.tx) / this.view.k, y: (p.y - this.view.ty) / this.view.k };
  }

  applyView() {
    const { k, tx, ty } = this.view;
    this.viewport.setAttribute("transform", `translate(${tx},${ty}) scale(${k})`);
    this.svg.dataset.zoom = k.toFixed(3);
  }

  zoom(factor, at) {
    const r = this.svg.getBoundingClientRect();
    const p = at || { x: r.width / 2, y: r.height / 2 };
    const k = Math.min(3, Math.max(0.2, this.view.k * factor));
    this.view.tx = p.x - ((p.x - this.view.tx) * k) / this.view.k;
    this.view.ty = p.y - ((p.y - this.view.ty) * k) / this.view.k;
    this.view.k = k;
    this.applyView();
  }

  fit() {
    const pos = [...this.positions().values()];
    const r = this.svg.getBoundingClientRect();
    if (!pos.length || !r.width) return;
    const minX = Math.min(...pos.map((p) => p.x)) - 30;
    const minY = Math.min(...pos.map((p) => p.y)) - 30;
    const maxX = Math.max(...pos.map((p) => p.x + W)) + 30;
    const maxY = Math.max(...pos.map((p) => p.y + H)) + 50;
    const k = Math.min(1.5, Math.max(0.2, Math.min(r.width / (maxX - minX), r.height / (maxY - minY))));
    this.view = { k, tx: (r.width - (maxX - minX) * k) / 2 - minX * k, ty: (r.height - (maxY - minY) * k) / 2 - minY * k };
    this.applyView();
  }

  // --- the model ------------------------------------------------------------------------------

  setDefinition(definition) {
    this.def = definition && typeof definition === "object" ? clone(definition) : { nodes: [] };
    if (!Array.isArray(this.def.nodes)) this.def.nodes = [];
    if (!Array.isArray(this.def.edges)) this.def.edges = [];
    const ids = new Set(this.def.nodes.map((n) => n && n.id));
    if (this.selected && this.selected.node && !ids.has(this.selected.node)) this.selected = null;
    if (this.selected && this.selected.edge !== undefined && !this.def.edges[this.selected.edge]) this.selected = null;
    this.render();
    if (!this.fitted && this.svg.getBoundingClientRect().width) { this.fitted = true; this.fit(); }
  }

  setProblems(errors) {
    const key = stringifyJson(errors || []);
    if (key === this.problemsKey) return;  // nothing new: keep the canvas (and a drag in progress)
    this.problemsKey = key;
    this.problems = errors || [];
    this.renderCanvas();
    // Never pull a field out from under someone typing in it; the node's outline shows the news.
    if (!this.inspector.contains(document.activeElement)) this.renderInspector();
  }

  definition() {
    return clone(this.def);
  }

  positions() {
    const saved = (this.def.metadata && this.def.metadata.layout) || {};
    const graph = graphOf(this.def);
    const auto = graph.nodes.length ? layout(graph).coords : new Map();
    const out = new Map();
    for (const n of graph.nodes) {
      const p = saved[n.id];
      out.set(n.id, Array.isArray(p) && p.length === 2 ? { x: Number(p[0]), y: Number(p[1]) } : auto.get(n.id));
    }
    return out;
  }

  // Every builder edit records where each node is, so the JSON view and the canvas agree.
  freeze(pos = this.positions()) {
    this.def.metadata = this.def.metadata || {};
    this.def.metadata.layout = Object.fromEntries([...pos].map(([id, p]) => [id, [Math.round(p.x), Math.round(p.y)]]));
  }

  commit({ inspector = true } = {}) {
    this.renderCanvas();
    if (inspector) this.renderInspector();
    this.onChange(this.definition());
  }

  nodeIndex(id) {
    return this.def.nodes.findIndex((n) => n && n.id === id);
  }

  freshId(type) {
    const ids = new Set(this.def.nodes.map((n) => n && n.id));
    let i = 1;
    while (ids.has(`${type}_${i}`)) i++;
    return `${type}_${i}`;
  }

  defaultConfig(type) {
    const schema = (this.types.get(type) || {}).config_schema || {};
    const config = {};
    for (const name of schema.required || []) {
      const p = (schema.properties || {})[name] || {};
      config[name] = p.type === "integer" || p.type === "number" ? (p.minimum ?? 1) : p.type === "boolean" ? false : "";
    }
    if (type === "transform") config.expression = "inputs";
    return config;
  }

  addNode(type, at) {
    const pos = this.positions();
    const id = this.freshId(type);
    let where = at;
    if (!where) {
      const all = [...pos.values()];
      where = all.length ? { x: Math.max(...all.map((p) => p.x)) + W + 60, y: Math.min(...all.map((p) => p.y)) } : { x: 40, y: 40 };
    }
    pos.set(id, { x: where.x - (at ? W / 2 : 0), y: where.y - (at ? H / 2 : 0) });
    this.def.nodes.push({ id, type, config: this.defaultConfig(type) });
    this.freeze(pos);
    this.selected = { node: id };
    this.commit();
  }

  addEdge(from, to) {
    if (!from || !to || from === to) return;
    if (this.def.edges.some((e) => e.from === from && e.to === to)) return;
    this.freeze();
    this.def.edges.push({ from, to });
    this.selected = { edge: this.def.edges.length - 1 };
    this.commit();
  }

  removeSelected() {
    const sel = this.selected;
    if (!sel) return;
    this.freeze();
    if (sel.node) {
      this.def.nodes = this.def.nodes.filter((n) => n.id !== sel.node);
      this.def.edges = this.def.edges.filter((e) => e.from !== sel.node && e.to !== sel.node);
      delete this.def.metadata.layout[sel.node];
    } else {
      this.def.edges.splice(sel.edge, 1);
    }
    this.selected = null;
    this.commit();
  }

  renameNode(oldId, newId) {
    if (!/^[a-zA-Z0-9_-]{1,200}$/.test(newId) || this.nodeIndex(newId) >= 0) return false;
    const pos = this.positions();
    pos.set(newId, pos.get(oldId));
    pos.delete(oldId);
    this.def.nodes[this.nodeIndex(oldId)].id = newId;
    for (const e of this.def.edges) {
      if (e.from === oldId) e.from = newId;
      if (e.to === oldId) e.to = newId;
    }
    for (const n of this.def.nodes) {
      if (n.type !== "loop" || !n.config) continue;
      for (const [key] of LOOP_KEYS) {
        const value = n.config[key];
        if (value === oldId) n.config[key] = newId;
        else if (Array.isArray(value)) n.config[key] = value.map((v) => (v === oldId ? newId : v));
      }
    }
    this.freeze(pos);
    this.selected = { node: newId };
    return true;
  }

  autoLayout() {
    const graph = graphOf(this.def);
    if (!graph.nodes.length) return;
    this.freeze(layout(graph).coords);
    this.commit({ inspector: false });
    this.fit();
  }

  // --- pointer: move nodes, draw edges, pan --------------------------------------------------

  pointerDown(ev) {
    if (ev.button !== 0) return;
    const port = ev.target.closest("[data-port]");
    const nodeEl = ev.target.closest("[data-node]");
    const edgeEl = ev.target.closest("[data-edge]");
    if (port) return this.startConnect(ev, port.getAttribute("data-port"));
    if (nodeEl) return this.startMove(ev, nodeEl.getAttribute("data-node"));
    if (edgeEl) {
      this.selected = { edge: Number(edgeEl.getAttribute("data-edge")) };
      this.renderCanvas();
      this.renderInspector();
      return undefined;
    }
    return this.startPan(ev);
  }

  drag(ev, onMove, onUp) {
    ev.preventDefault();
    const id = ev.pointerId;
    try { this.svg.setPointerCapture(id); } catch { /* synthetic pointers have no capture */ }
    const move = (e) => onMove(e);
    const up = (e) => {
      this.svg.removeEventListener("pointermove", move);
      this.svg.removeEventListener("pointerup", up);
      try { this.svg.releasePointerCapture(id); } catch { /* already released */ }
      onUp(e);
    };
    this.svg.addEventListener("pointermove", move);
    this.svg.addEventListener("pointerup", up);
  }

  startMove(ev, id) {
    const pos = this.positions();
    const start = this.toWorld(ev.clientX, ev.clientY);
    const origin = { ...pos.get(id) };
    let moved = false;
    const g = this.viewport.querySelector(`[data-node="${CSS.escape(id)}"]`);
    this.drag(ev, (e) => {
      const p = this.toWorld(e.clientX, e.clientY);
      const dx = p.x - start.x;
      const dy = p.y - start.y;
      if (!moved && Math.hypot(dx, dy) < 3) return;
      moved = true;
      pos.set(id, { x: origin.x + dx, y: origin.y + dy });
      if (g) g.setAttribute("transform", `translate(${origin.x + dx},${origin.y + dy})`);
    }, () => {
      this.selected = { node: id };
      if (moved) {
        this.freeze(pos);
        this.commit();
      } else {
        this.renderCanvas();
        this.renderInspector();
      }
    });
  }

  startConnect(ev, from) {
    const pos = this.positions().get(from);
    const line = s("path", { class: "rubber", d: "" });
    this.viewport.append(line);
    this.drag(ev, (e) => {
      const p = this.toWorld(e.clientX, e.clientY);
      line.setAttribute("d", `M${pos.x + W},${pos.y + H / 2} L${p.x},${p.y}`);
    }, (e) => {
      line.remove();
      const hit = document.elementFromPoint(e.clientX, e.clientY);
      const target = hit && hit.closest && hit.closest("[data-node]");
      if (target) this.addEdge(from, target.getAttribute("data-node"));
    });
  }

  startPan(ev) {
    const start = { x: ev.clientX, y: ev.clientY, tx: this.view.tx, ty: this.view.ty };
    let moved = false;
    this.drag(ev, (e) => {
      moved = true;
      this.view.tx = start.tx + e.clientX - start.x;
      this.view.ty = start.ty + e.clientY - start.y;
      this.applyView();
    }, () => {
      if (!moved && this.selected) {
        this.selected = null;
        this.renderCanvas();
        this.renderInspector();
      }
    });
  }

  // --- drawing --------------------------------------------------------------------------------

  render() {
    this.renderCanvas();
    this.renderInspector();
  }

  problemsFor() {
    const byNode = new Map();
    const byEdge = new Map();
    for (const p of this.problems) {
      const t = problemTarget(p.path, this.def);
      if (!t) continue;
      const map = t.node !== undefined ? byNode : byEdge;
      const key = t.node !== undefined ? t.node : t.edge;
      if (!map.has(key)) map.set(key, []);
      map.get(key).push(p);
    }
    return { byNode, byEdge };
  }

  renderCanvas() {
    const pos = this.positions();
    const { byNode, byEdge } = this.problemsFor();
    const edges = s("g", { class: "edges" });
    const labels = s("g", { class: "edge-labels" });
    const graph = graphOf(this.def);
    graph.edges.forEach((e) => {
      const a = pos.get(e.from);
      const b = pos.get(e.to);
      if (!a || !b) return;
      const index = e.kind === "edge" ? this.def.edges.findIndex((d) => d.from === e.from && d.to === e.to) : -1;
      const x0 = a.x + W;
      const y0 = a.y + H / 2;
      const x1 = b.x;
      const y1 = b.y + H / 2;
      const bend = Math.max(40, Math.abs(x1 - x0) / 2);
      const d = x1 > x0 + 20 ? `M${x0},${y0} C${x0 + bend},${y0} ${x1 - bend},${y1} ${x1 - 2},${y1}`
        : `M${x0},${y0} C${x0 + 80},${y0 + 90} ${x1 - 80},${y1 + 90} ${x1 - 2},${y1}`;
      const selected = this.selected && this.selected.edge === index && index >= 0;
      const bad = byEdge.has(index);
      const g = s("g", index >= 0 ? { "data-edge": String(index), class: `b-edge${selected ? " selected" : ""}${bad ? " has-error" : ""}` }
        : { class: "b-edge implicit" });
      g.append(s("path", { d, class: "hit" }), s("path", { d, class: `edge ${e.kind}`, "marker-end": "url(#b-arrow)" }),
        s("title", {}, `${e.from} → ${e.to}${e.label ? ` when ${e.label}` : ""}`));
      edges.append(g);
      if (e.label) {
        const lx = (x0 + x1) / 2;
        const ly = x1 > x0 + 20 ? (y0 + y1) / 2 - 6 : Math.max(y0, y1) + 60;
        const text = s("text", { x: lx, y: ly, class: "edge-label", "text-anchor": "middle", "data-edge-label": String(index) }, e.label);
        const width = e.label.length * 6.7 + 10;
        labels.append(s("rect", { x: lx - width / 2, y: ly - 12, width, height: 16, rx: 3, class: "edge-label-bg" }), text);
      }
    });
    const nodes = s("g", { class: "nodes" });
    for (const n of graph.nodes) {
      const p = pos.get(n.id);
      const problems = byNode.get(n.id) || [];
      const selected = this.selected && this.selected.node === n.id;
      const g = s("g", { class: `b-node${selected ? " selected" : ""}${problems.length ? " has-error" : ""}`,
        transform: `translate(${p.x},${p.y})`, "data-node": n.id, "data-type": n.type, tabindex: "0", role: "button",
        "aria-label": `${n.id}, ${n.type}${problems.length ? `, ${problems.length} problem(s)` : ""}` });
      g.addEventListener("keydown", (ev) => {
        if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); this.selected = { node: n.id }; this.render(); }
      });
      g.append(s("rect", { width: W, height: H, rx: 9, class: "box" }),
        s("text", { x: 12, y: 22, class: "node-id" }, n.id),
        s("text", { x: 12, y: 41, class: "node-sub" }, n.type),
        s("circle", { cx: W, cy: H / 2, r: 7, class: "port", "data-port": n.id },
          s("title", {}, `Drag from here to another node to connect ${n.id} to it`)));
      if (problems.length) {
        const message = problems[0].message + (problems.length > 1 ? ` (+${problems.length - 1} more)` : "");
        g.append(s("text", { x: 0, y: H + 15, class: "node-error", "data-error-for": n.id }, message.length > 70 ? `${message.slice(0, 69)}…` : message,
          s("title", {}, problems.map((q) => `${q.path}: ${q.message}`).join("\n"))));
      }
      nodes.append(g);
    }
    this.viewport.replaceChildren(edges, nodes, labels);  // labels on top: always whole and readable
    this.applyView();
  }

  // --- the inspector: a node's config form, an edge's condition -----------------------------

  renderInspector() {
    const sel = this.selected;
    if (sel && sel.node && this.nodeIndex(sel.node) >= 0) return this.nodeForm(this.def.nodes[this.nodeIndex(sel.node)]);
    if (sel && sel.edge !== undefined && this.def.edges[sel.edge]) return this.edgeForm(sel.edge);
    setChildren(this.inspector, el("h3", {}, "Nothing selected"),
      el("p", { class: "muted" }, "Drag a node type from the palette onto the canvas (or click it). Drag from a node's ",
        "right-hand dot to another node to connect them; click an edge to give it a condition; click a node to edit its config."));
    return undefined;
  }

  field(id, label, control, hint) {
    return el("div", { class: "field" }, el("label", { for: id }, label), control, hint ? el("p", { class: "hint muted" }, hint) : null);
  }

  nodeForm(node) {
    const spec = this.types.get(node.type) || { config_schema: {}, description: "(a type the registry does not know)" };
    const schema = spec.config_schema || {};
    const required = new Set(schema.required || []);
    const config = node.config && typeof node.config === "object" ? node.config : {};
    const { byNode } = this.problemsFor();
    const problems = byNode.get(node.id) || [];
    const idInput = el("input", { id: "b-node-id", value: node.id, pattern: "[a-zA-Z0-9_-]+", maxlength: "200" });
    idInput.addEventListener("change", () => {
      if (this.renameNode(node.id, idInput.value.trim())) this.commit();
      else idInput.value = node.id;
    });
    const fields = Object.entries(schema.properties || {}).map(([name, prop]) =>
      this.configField(node, name, prop || {}, required.has(name), config));
    const others = this.def.nodes.filter((n) => n.id !== node.id);
    const target = el("select", { id: "b-connect-to", "aria-label": "Connect to" }, others.map((n) => el("option", { value: n.id }, n.id)));
    const connect = el("div", { class: "row" }, el("label", { for: "b-connect-to" }, "Connect to"), target,
      el("button", { type: "button", class: "btn small", onclick: () => this.addEdge(node.id, target.value) }, "Add edge"));
    setChildren(this.inspector,
      el("h3", {}, "Node ", el("span", { class: "mono" }, node.id), " ", el("span", { class: "muted" }, node.type)),
      el("p", { class: "muted small" }, spec.description || ""),
      problems.length ? el("ul", { class: "alert node-problems", role: "alert" },
        problems.map((p) => el("li", {}, el("code", {}, p.path), " ", p.message))) : null,
      this.field("b-node-id", "Id", idInput),
      el("fieldset", { class: "config-form", "data-type": node.type }, el("legend", {}, "Config"),
        fields.length ? fields : el("p", { class: "muted" }, "This type has no config.")),
      el("details", { class: "refs" }, el("summary", {}, "Referring to inputs and other nodes"),
        el("dl", {}, Object.entries(this.references).flatMap(([k, v]) => [el("dt", {}, el("code", {}, k)), el("dd", {}, v)]))),
      others.length ? connect : null,
      el("button", { type: "button", class: "btn danger small", onclick: () => this.removeSelected() }, "Delete node"));
    return undefined;
  }

  configField(node, name, prop, required, config) {
    const id = `b-cfg-${name}`;
    const label = `${name}${required ? " *" : ""}`;
    const value = config[name];
    const set = (v) => {
      this.freeze();
      const target = this.def.nodes[this.nodeIndex(node.id)];
      target.config = target.config && typeof target.config === "object" ? target.config : {};
      if (v === undefined) delete target.config[name];
      else target.config[name] = v;
      this.commit({ inspector: false });
    };
    const types = Array.isArray(prop.type) ? prop.type : [prop.type];
    const enumValues = prop.enum || (prop.items && prop.items.enum && prop.type !== "array" ? prop.items.enum : null);
    let control;
    if (enumValues) {
      control = el("select", { id, name }, el("option", { value: "" }, "—"),
        enumValues.map((v) => el("option", { value: String(v), selected: value === v }, String(v))));
      control.addEventListener("change", () => set(control.value === "" ? undefined : control.value));
    } else if (types.length === 1 && types[0] === "boolean") {
      control = el("input", { id, name, type: "checkbox", checked: value === true });
      control.addEventListener("change", () => set(control.checked));
    } else if (types.length === 1 && (types[0] === "integer" || types[0] === "number")) {
      control = el("input", { id, name, type: "number", value: value ?? "", min: prop.minimum, max: prop.maximum,
        step: types[0] === "integer" ? "1" : "any" });
      control.addEventListener("input", () => set(control.value === "" ? undefined : numberOf(control.value)));
    } else if (types.length === 1 && types[0] === "string") {
      const long = LONG_TEXT.has(name);
      control = el(long ? "textarea" : "input", { id, name, rows: long ? "3" : null, class: long ? "code" : null, spellcheck: "false" });
      control.value = typeof value === "string" ? value : value === undefined ? "" : stringifyJson(value);
      control.addEventListener("input", () => set(control.value === "" && !required ? undefined : control.value));
    } else if (types.length === 1 && types[0] === "array" && prop.items && (prop.items.type === "string" || prop.items.enum)) {
      control = el("input", { id, name, value: Array.isArray(value) ? value.join(", ") : "", placeholder: "comma-separated" });
      control.addEventListener("input", () => {
        const items = control.value.split(",").map((v) => v.trim()).filter(Boolean);
        set(control.value.trim() === "" ? undefined : items);
      });
    } else {
      control = el("textarea", { id, name, rows: "3", class: "code", spellcheck: "false", placeholder: "JSON" });
      control.value = value === undefined ? "" : stringifyJson(value, 2);
      control.addEventListener("input", () => {
        if (control.value.trim() === "") return set(undefined);
        try {
          control.setCustomValidity("");
          return set(parseJson(control.value));
        } catch {
          control.setCustomValidity("not JSON yet");
          return undefined;
        }
      });
    }
    return this.field(id, label, control, prop.description || null);
  }

  edgeForm(index) {
    const edge = this.def.edges[index];
    const { byEdge } = this.problemsFor();
    const problems = byEdge.get(index) || [];
    const condition = el("input", { id: "b-edge-condition", value: edge.condition || "", class: "mono",
      placeholder: "always (no condition)", spellcheck: "false" });
    condition.addEventListener("input", () => {
      this.freeze();
      if (condition.value.trim()) this.def.edges[index].condition = condition.value;
      else delete this.def.edges[index].condition;
      this.commit({ inspector: false });
    });
    setChildren(this.inspector,
      el("h3", {}, "Edge ", el("span", { class: "mono" }, `${edge.from} → ${edge.to}`)),
      problems.length ? el("ul", { class: "alert", role: "alert" }, problems.map((p) => el("li", {}, p.message))) : null,
      this.field("b-edge-condition", "Condition (CEL)", condition,
        "Over the source node's output: `$.x` means output.x, e.g. $.status_code == 200. Empty: always taken."),
      el("button", { type: "button", class: "btn danger small", onclick: () => this.removeSelected() }, "Delete edge"));
  }
}
