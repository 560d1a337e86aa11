// The JSON view: CodeMirror 6 (vendored, one pre-bundled module) with JSON highlighting, a
// syntax linter and completion driven by the workflow JSON Schema and the node types' config
// schemas: keys where a key goes, node types after "type", node ids after "from" / "to", enum
// values, and $inputs / $nodes references inside config strings. The <textarea> stays the value
// the page reads; when the bundle cannot load, the textarea is the editor.
import { parseJson, stringifyJson } from "./api.js";

export async function mountJsonEditor(textarea, { workflowSchema, catalogue, onChange }) {
  let cm;
  try {
    cm = await import("../vendor/codemirror/codemirror.bundle.js");
  } catch {
    textarea.addEventListener("input", onChange);
    return { set: (text) => { textarea.value = text; }, focus: () => textarea.focus(), kind: "textarea" };
  }
  const { EditorView, basicSetup, json, jsonParseLinter, linter, lintGutter, autocompletion } = cm;
  const types = new Map((catalogue || []).map((t) => [t.type, t]));
  let applying = false;

  const complete = (context) => completions(context, workflowSchema, types);
  const host = document.createElement("div");
  host.className = "cm-host";
  host.dataset.editor = "codemirror";
  textarea.after(host);
  textarea.hidden = true;
  const view = new EditorView({
    doc: textarea.value,
    parent: host,
    extensions: [
      basicSetup, json(), linter(jsonParseLinter()), lintGutter(), autocompletion({ override: [complete] }),
      EditorView.contentAttributes.of({ "aria-label": "Workflow JSON", "aria-describedby": "validation" }),
      EditorView.updateListener.of((update) => {
        if (!update.docChanged) return;
        textarea.value = update.state.doc.toString();
        if (!applying) onChange();
      }),
    ],
  });
  return {
    kind: "codemirror",
    view,
    set(text) {
      if (text === view.state.doc.toString()) return;
      applying = true;
      try {
        view.dispatch({ changes: { from: 0, to: view.state.doc.length, insert: text } });
      } finally {
        applying = false;
      }
    },
    focus: () => view.focus(),
  };
}

// --- completion -----------------------------------------------------------------------------------
// Where the cursor is, read from the text before it with a small JSON scanner: the keys from the
// root down ("*" for an array step), whether a key or a value is being typed, and the plain string
// values of the node object around it (its "type"). A scanner and not the syntax tree: the text
// being typed is not JSON yet, and error recovery makes a tree that depends on the edits before.

function scan(text) {
  const stack = [];
  let i = 0;
  while (i < text.length) {
    const ch = text[i];
    if (ch === '"') {
      let j = i + 1;
      let value = "";
      while (j < text.length && text[j] !== '"') {
        if (text[j] === "\\") j++;
        value += text[j] || "";
        j++;
      }
      if (j >= text.length) break; // an unterminated string: the word being typed
      const top = stack[stack.length - 1];
      if (top && top.type === "obj" && top.expectingKey) { top.key = value; top.expectingKey = false; }
      else if (top && top.type === "obj" && top.key !== null) top.values[top.key] = value;
      i = j + 1;
      continue;
    }
    if (ch === "{") stack.push({ type: "obj", key: null, expectingKey: true, values: {} });
    else if (ch === "[") stack.push({ type: "arr" });
    else if (ch === "}" || ch === "]") stack.pop();
    else if (ch === ",") {
      const top = stack[stack.length - 1];
      if (top && top.type === "obj") { top.expectingKey = true; top.key = null; }
    }
    i++;
  }
  const path = [];
  stack.slice(0, -1).forEach((c) => path.push(c.type === "arr" ? "*" : c.key));
  const inner = stack[stack.length - 1] || { type: "obj", expectingKey: true, values: {} };
  const nodeObject = stack[0] && stack[0].key === "nodes" && stack[1] && stack[1].type === "arr" ? stack[2] : null;
  return {
    path,
    atKey: inner.type === "obj" && inner.expectingKey,
    valueOf: inner.type === "obj" && !inner.expectingKey ? inner.key : null,
    nodeType: nodeObject ? nodeObject.values.type || null : null,
  };
}

function resolveRef(root, schema) {
  if (schema && schema.$ref && schema.$ref.startsWith("#/")) {
    return schema.$ref.slice(2).split("/").reduce((s, k) => (s ? s[k] : undefined), root) || {};
  }
  return schema || {};
}

// The JSON Schema that governs the object at ``path`` ("config" takes the node type's schema).
function schemaAt(root, path, nodeType, types) {
  let schema = root;
  for (let i = 0; i < path.length; i++) {
    schema = resolveRef(root, schema);
    const step = path[i];
    if (step === "*") schema = resolveRef(root, schema.items);
    else if (step === "config" && path[i - 1] === "*" && path[i - 2] === "nodes") {
      schema = (types.get(nodeType) || {}).config_schema || {};
      root = schema;
    } else schema = resolveRef(root, (schema.properties || {})[step]);
  }
  return resolveRef(root, schema);
}

function nodeIds(state) {
  try {
    const doc = parseJson(state.doc.toString());
    return (doc.nodes || []).map((n) => n && n.id).filter((id) => typeof id === "string");
  } catch {
    return [...state.doc.toString().matchAll(/"id"\s*:\s*"([^"]+)"/g)].map((m) => m[1]);
  }
}

function completions(context, workflowSchema, types) {
  const { state } = context;
  const word = context.matchBefore(/"?[\w$.\-]*/);
  if (!word || (word.from === word.to && !context.explicit)) return null;
  const { path, atKey, valueOf, nodeType } = scan(state.doc.sliceString(0, word.from));
  const quoted = (text) => `"${text}"`;
  let options = [];
  if (atKey) {
    const schema = schemaAt(workflowSchema, path, nodeType, types);
    options = Object.entries(schema.properties || {}).map(([key, prop]) => ({
      label: quoted(key), type: "property", detail: (prop && (prop.type || (prop.enum ? "enum" : ""))) || "",
      info: prop && prop.description ? prop.description : undefined, apply: `${quoted(key)}: ` }));
  } else if (valueOf !== null) {
    if (valueOf === "type" && path.length === 2 && path[0] === "nodes") {
      options = [...types.values()].map((t) => ({ label: quoted(t.type), type: "enum", info: t.description }));
    } else if ((valueOf === "from" || valueOf === "to") && path[0] === "edges") {
      options = nodeIds(state).map((id) => ({ label: quoted(id), type: "variable" }));
    } else {
      const schema = schemaAt(workflowSchema, [...path, valueOf], nodeType, types);
      if (schema.enum) options = schema.enum.map((v) => ({ label: stringifyJson(v), type: "enum" }));
      else if (path[0] === "nodes" && path.includes("config")) {
        options = [{ label: '"$inputs.', type: "text", info: "a value of the run's inputs" },
          ...nodeIds(state).map((id) => ({ label: `"$nodes.${id}.`, type: "text", info: `${id}'s output` }))];
      }
    }
  }
  if (!options.length) return null;
  return { from: word.from, options, validFor: /^"?[\w$.\-]*$/ };
}
