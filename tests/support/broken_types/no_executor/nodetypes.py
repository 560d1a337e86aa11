from workflows.registry import NodeType, register

# Routed (not inline) but nothing runs it: the system check refuses start-up.
register(NodeType("unrun", run=None, description="a type with a queue and no executor"))
