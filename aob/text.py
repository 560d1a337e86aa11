"""Text shown to a person that may be someone else's words (a gate's message, an agent's patch
description or operations, a remote's error). Two kinds of characters in it are shown as JSON's
escapes of them (``\\u202e``; one past U+FFFF as its two UTF-16 halves, ``\\udb40\\udc69``), so that
what a person reads is what the bytes say and the shown text, inside JSON, reads back the same value:

- Unicode's bidirectional controls (embeddings, overrides, isolates, marks): a right-to-left
  override draws ``$10000`` for the characters ``00001$``.
- Characters that draw nothing (``INVISIBLE``), some of which carry text: Unicode's tag characters
  spell ASCII that models read and people do not see (an agent's patch could hold an instruction
  for the model of a node it adds, invisible to the person approving it), and the variation
  selectors supplement carries a byte in each. A subdivision flag (🏴 and tag characters, ending in
  the cancel tag) is the tag characters' one use in text, and is shown as the flag it is.

One list, read by the CLI (``aob.cli.output``), the pages' server-drawn cells (``workflows.web``) and
the notifications (``approvals.notifications``); the pages' script keeps a copy (``api.js``) that a
test compares with it (``tests/web/test_bidi.py``).
"""

from __future__ import annotations

import re

BIDI = (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))
# Hangul fillers, the Mongolian vowel separator, the zero-width space, the word joiner and the
# invisible operators, the byte-order mark, Unicode's tag characters and the variation selectors
# supplement (ideographic variants, and a byte a selector in "emoji smuggling"). Not the zero-width
# (non-)joiner nor the variation selectors of the first block: emoji sequences and scripts need them.
INVISIBLE = (0x115F, 0x1160, 0x180E, 0x200B, *range(0x2060, 0x2065), 0x3164, 0xFEFF, 0xFFA0,
             *range(0xE0000, 0xE0080), *range(0xE0100, 0xE01F0))
SHOWN = (*BIDI, *INVISIBLE)

_FLAG = "\U0001f3f4[\U000e0020-\U000e007e]+\U000e007f"  # 🏴 and a subdivision's tag characters
_ESCAPED = re.compile(f"({_FLAG})|[{''.join(map(chr, SHOWN))}]")


def escape(char: str) -> str:
    """``char`` as JSON writes it escaped: ``\\u202e``; past U+FFFF its UTF-16 halves."""
    code = ord(char)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    high, low = divmod(code - 0x10000, 0x400)
    return f"\\u{0xD800 + high:04x}\\u{0xDC00 + low:04x}"


def shown(text: str) -> str:
    """``text`` with its bidirectional controls and invisible characters written as escapes."""
    return _ESCAPED.sub(lambda found: found.group(1) or escape(found.group()), text)
