// The parts of CodeMirror 6 AOB's JSON editor uses, bundled once into one ES module.
export { EditorView, basicSetup } from "codemirror";
export { EditorState } from "@codemirror/state";
export { keymap } from "@codemirror/view";
export { json, jsonParseLinter } from "@codemirror/lang-json";
export { syntaxTree } from "@codemirror/language";
export { autocompletion, completionKeymap } from "@codemirror/autocomplete";
export { linter, lintGutter, setDiagnostics } from "@codemirror/lint";
