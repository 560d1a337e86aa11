from workflows.registry import NodeType, register

# Routed (not inline) but nothing runs it: the system check refuses start-up.
register(NodeType("unrun", run=None, description="a type with a queue and no executor"))
# Inline (the coordinator evaluates it) yet with an executor that would never be called.
register(NodeType("halfinline", run=lambda ctx: None, inline=True, description="inline with an executor"))
