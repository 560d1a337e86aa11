"""A secret's name: one pattern for a reference (``vault.references``), the URL, the service and
the model's validator. Nothing else here, so any of them imports it."""

from __future__ import annotations

import re

NAME = r"[A-Za-z_][A-Za-z0-9_]{0,63}"
NAME_RE = re.compile(rf"^{NAME}\Z")
