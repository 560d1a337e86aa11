"""Workflow definitions: the JSON Schema, the graph rules, and the compiled IR."""
