"""The execution engine: emit, execute, decide (DESIGN.md, "How one step flows")."""
