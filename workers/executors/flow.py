"""Types the coordinator evaluates itself, with no worker hop."""

from workflows.registry import inline_type

inline_type(
    "conditional",
    config_schema={"type": "object", "additionalProperties": False},
    description="Routes on its predecessor's output: conditions on its outgoing edges are CEL over "
    "`output` (the predecessor's output; `$.x` means `output.x`); first true rule wins, else the "
    "unconditional edge.",
)

inline_type(
    "loop",
    config_schema={
        "type": "object",
        "required": ["max_iterations", "loop_back_to"],
        "properties": {
            "max_iterations": {"type": "integer", "minimum": 1, "maximum": 10000},
            "loop_back_to": {"type": "string"},
            "condition": {"type": "string", "description": "CEL over the predecessor's output; true = go round"},
            # one node id, or (the original system's shape) a list of them, all followed
            "break_path": {"type": ["string", "array"], "minLength": 1, "items": {"type": "string", "minLength": 1},
                           "minItems": 1, "maxItems": 1000},
            "timeout_path": {"type": ["string", "array"], "minLength": 1, "items": {"type": "string", "minLength": 1},
                             "minItems": 1, "maxItems": 1000},
        },
        "additionalProperties": False,
    },
    description="Repeats the nodes from `loop_back_to` while `condition` holds, at most `max_iterations` "
    "times; then continues to `break_path` (condition false) or `timeout_path` (iterations exhausted), else "
    "along its edges, whose conditions read its output (`$.decision == 'break'`, `$.iterations`).",
)
