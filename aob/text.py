"""Text shown to a person that may be someone else's words (a gate's message, an agent's patch
description or operations, a remote's error). Two kinds of characters in it are shown as JSON's
escapes of them (``\\u202e``; one past U+FFFF as its two UTF-16 halves, ``\\udb40\\udc69``), so that
what a person reads is what the bytes say and the shown text, inside JSON, reads back the same value:

- Unicode's bidirectional controls (embeddings, overrides, isolates, marks): a right-to-left
  override draws ``$10000`` for the characters ``00001$``.
- Characters that draw nothing (``INVISIBLE``), some of which carry text: Unicode's tag characters
  spell ASCII that models read and people do not see (an agent's patch could hold an instruction
  for the model of a node it adds, invisible to the person approving it), and the variation
  selectors supplement carries a byte in each. The recommended subdivision flags (``FLAGS``: 🏴 and
  tag letters, ending in the cancel tag) are the tag characters' one use in text, and are shown as
  the flags they are.

One list, read by the CLI (``aob.cli.output``), the pages' server-drawn cells (``workflows.web``),
the notifications (``approvals.notifications``) and the admin's JSON blocks, table cells and
approval and patch pages; the pages' script keeps a copy (``api.js``) that a test compares with it
(``tests/web/test_bidi.py``).
"""

from __future__ import annotations

import re

BIDI = (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))
# Unicode's Default_Ignorable_Code_Point characters (DerivedCoreProperties.txt), which draw nothing:
# but the bidirectional controls (above), the zero-width (non-)joiner and the variation selectors of
# the first block, which emoji sequences and scripts need to draw as written.
INVISIBLE = (0x00AD, 0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, *range(0x180B, 0x1810), 0x200B,
             *range(0x2060, 0x2066), *range(0x206A, 0x2070), 0x3164, 0xFEFF, 0xFFA0, *range(0xFFF0, 0xFFF9),
             *range(0x1BCA0, 0x1BCA4), *range(0x1D173, 0x1D17B), *range(0xE0000, 0xE1000))
SHOWN = (*BIDI, *INVISIBLE)
# The subdivision flags Unicode recommends (England, Scotland, Wales): a black flag, the tag letters
# of the subdivision, the cancel tag. Any other run of tag characters after a black flag is shown
# escaped: it is drawn as a bare flag, and could carry any text.
FLAGS = ("gbeng", "gbsct", "gbwls")


def _tags(letters: str) -> str:
    return "".join(chr(0xE0000 + ord(letter)) for letter in letters)


def _ranges(codes: tuple[int, ...]) -> str:
    """``codes`` as a regular expression's character class body, in ranges."""
    out, codes_sorted = [], sorted(set(codes))
    start = previous = codes_sorted[0]
    for code in [*codes_sorted[1:], -1]:
        if code != previous + 1:
            out.append(re.escape(chr(start)) + (f"-{re.escape(chr(previous))}" if previous > start else ""))
            start = code
        previous = code
    return "".join(out)


_FLAG = "\U0001f3f4(?:" + "|".join(_tags(flag) for flag in FLAGS) + ")\U000e007f"
_ESCAPED = re.compile(f"({_FLAG})|[{_ranges(SHOWN)}]")


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
