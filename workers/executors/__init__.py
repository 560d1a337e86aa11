"""Every executor module; importing this package fills the registry."""

from . import flow, http, transform  # noqa: F401
