"""Every executor module; importing this package fills the registry."""

from . import agent, flow, hitl, http, transform  # noqa: F401
