// The JSON view: CodeMirror 6 (vendored, one pre-bundled module) with JSON highlighting, a
// syntax linter and completion driven by the workflow JSON Schema and the node types' config
// schemas: keys where a key goes, node types after "type", node ids after "from" / "to", enum
// values, and $inputs / $nodes references inside config strings. The <textarea> stays the value
// the page reads; when the bundle cannot load, the textarea is the editor.

export async function mountJsonEditor(textarea, { workflowSchema, catalogue, onChange }) {
  let cm;
  try {
    cm = await import("../vendor/codemirror/codemirror.bundle.js");
  } catch {
    textarea.addEventListener("input", onChange);
    return { set: (text) => { textarea.value = text; }, focus: () => textarea.focus(), kind: "textarea" };
  }
  const { EditorView, basicSetup, json, jsonParseLinter, linter, lintGutter, autocompletion, syntaxTree } = cm;
  const types = new Map((catalogue || []).map((t) => [t.type, t]));
  let applying = false;

  const complete = (context) => completions(context, syntaxTree, workflowSchema, types);
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

function textOf(state, node) {
  return state.doc.sliceString(node.from, node.to);
}

function unquote(text) {
  try { return JSON.parse(text); } catch { return text.replace(/^"|"$/g, ""); }
}

// The keys from the document root down to the cursor (array steps as "*"), and the object the
// cursor is in (its syntax node), from the JSON syntax tree.
function pathAt(state, syntaxTree, pos) {
  let node = syntaxTree(state).resolveInner(pos, -1);
  const path = [];
  let object = null;
  let inName = node.name === "PropertyName";
  let valueOf = null;
  for (let cur = node; cur; cur = cur.parent) {
    if (cur.name === "Property") {
      const name = cur.getChild("PropertyName");
      if (name && !(name.from <= pos && pos <= name.to)) {
        const key = unquote(textOf(state, name));
        if (valueOf === null && !inName && path.length === 0 && object === null) valueOf = key;
        path.unshift(key);
      }
    } else if (cur.name === "Array") {
      path.unshift("*");
    } else if (cur.name === "Object" && object === null) {
      object = cur;
    }
  }
  if (valueOf !== null) path.pop(); // the value's own key is not a step into it
  return { path, object, valueOf, inName, node };
}

function siblingValue(state, object, key) {
  if (!object) return null;
  for (let child = object.firstChild; child; child = child.nextSibling) {
    if (child.name !== "Property") continue;
    const name = child.getChild("PropertyName");
    if (name && unquote(textOf(state, name)) === key) {
      const value = name.nextSibling && name.nextSibling.nextSibling;
      return value ? unquote(textOf(state, value)) : null;
    }
  }
  return null;
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
    const doc = JSON.parse(state.doc.toString());
    return (doc.nodes || []).map((n) => n && n.id).filter((id) => typeof id === "string");
  } catch {
    return [...state.doc.toString().matchAll(/"id"\s*:\s*"([^"]+)"/g)].map((m) => m[1]);
  }
}

function completions(context, syntaxTree, workflowSchema, types) {
  const { state, pos } = context;
  const word = context.matchBefore(/"?[\w$.\-]*/);
  if (!word || (word.from === word.to && !context.explicit)) return null;
  const { path, object, valueOf, inName } = pathAt(state, syntaxTree, pos);
  const before = state.doc.sliceString(Math.max(0, word.from - 40), word.from).trimEnd();
  const atKey = inName || /[{,]$/.test(before);
  const inNode = path.length >= 2 && path[0] === "nodes";
  let nodeType = null;
  if (inNode) {
    // the node object is the one holding "config" (or the cursor's own object at depth 2)
    nodeType = path.length === 2 ? siblingValue(state, object, "type") : nodeTypeAround(state, syntaxTree, pos);
  }
  const quoted = (text) => (word.text.startsWith('"') ? `"${text}"` : `"${text}"`);
  let options = [];
  if (atKey) {
    const schema = schemaAt(workflowSchema, path, nodeType, types);
    options = Object.entries(schema.properties || {}).map(([key, prop]) => ({
      label: quoted(key), type: "property", detail: (prop && (prop.type || (prop.enum ? "enum" : ""))) || "",
      info: prop && prop.description ? prop.description : undefined, apply: `${quoted(key)}: ` }));
  } else if (valueOf !== null) {
    const parentPath = path;
    if (valueOf === "type" && parentPath.length === 2 && parentPath[0] === "nodes") {
      options = [...types.values()].map((t) => ({ label: quoted(t.type), type: "enum", info: t.description }));
    } else if ((valueOf === "from" || valueOf === "to") && parentPath[0] === "edges") {
      options = nodeIds(state).map((id) => ({ label: quoted(id), type: "variable" }));
    } else {
      const schema = schemaAt(workflowSchema, [...parentPath, valueOf], nodeType, types);
      if (schema.enum) options = schema.enum.map((v) => ({ label: JSON.stringify(v), type: "enum" }));
      else if (inNode && parentPath.includes("config")) {
        options = [{ label: '"$inputs.', type: "text", info: "a value of the run's inputs" },
          ...nodeIds(state).map((id) => ({ label: `"$nodes.${id}.`, type: "text", info: `${id}'s output` }))];
      }
    }
  }
  if (!options.length) return null;
  return { from: word.from, options, validFor: /^"?[\w$.\-]*$/ };
}

function nodeTypeAround(state, syntaxTree, pos) {
  // Climb to the object that is an element of "nodes" and read its "type".
  let node = syntaxTree(state).resolveInner(pos, -1);
  let candidate = null;
  for (let cur = node; cur; cur = cur.parent) {
    if (cur.name === "Object" && cur.parent && cur.parent.name === "Array") {
      const holder = cur.parent.parent;
      const name = holder && holder.getChild("PropertyName");
      if (name && unquote(textOf(state, name)) === "nodes") candidate = cur;
    }
  }
  return candidate ? siblingValue(state, candidate, "type") : null;
}
