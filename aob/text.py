"""Text shown to a person that may be someone else's words (a gate's message, an agent's patch
description, a remote's error): Unicode's bidirectional controls in it (embeddings, overrides,
isolates, marks) are shown as their escapes, since a right-to-left override draws ``$10000`` for the
characters ``00001$``. One list, read by the CLI (``aob.cli.output``) and the pages' server-drawn
cells (``workflows.web``); the pages' script keeps a copy (``api.js`` ``BIDI``) that a test compares
with it (``tests/web/test_bidi.py``).
"""

from __future__ import annotations

BIDI = (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))
ESCAPES = {c: f"\\u{c:04x}" for c in BIDI}


def shown(text: str) -> str:
    """``text`` with its bidirectional controls written as escapes (``\\u202e``)."""
    return text.translate(ESCAPES)
