"""Every executor module; importing this package fills the registry."""

from . import flow, hitl, http, transform  # noqa: F401
