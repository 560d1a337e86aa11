"""Reading a count or an index someone else wrote (a header, a pointer, a port): ASCII digits only,
and never more of them than the answer can need. ``int()`` takes "²" for a digit's neighbour
(``str.isdigit``) and refuses past 4,300 digits with a ValueError; both were 500s and crashes."""

from __future__ import annotations


def bounded_decimal(text: str | bytes, most_digits: int) -> int | None:
    """``text`` as a non-negative integer, or None when it is not one written in ASCII digits. Past
    ``most_digits`` significant digits the answer is ``10 ** most_digits``: larger than any number
    of that many digits, so every bound the caller checks it against refuses it, unconverted."""
    if not text or not text.isascii() or not text.isdigit():
        return None
    significant = text.lstrip(b"0" if isinstance(text, bytes) else "0")
    return int(significant or 0) if len(significant) <= most_digits else 10**most_digits
