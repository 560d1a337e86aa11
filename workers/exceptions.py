"""Errors an executor raises; each fails its node with ``error_type`` = ``code``."""

from __future__ import annotations

from aob_project.exceptions import AobError


class NodeFailed(AobError):
    """The node cannot succeed; ``extra["transient"]`` marks errors worth a retry."""

    code = "NodeFailed"

    @property
    def transient(self) -> bool:
        return bool(self.extra.get("transient"))
