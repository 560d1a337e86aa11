"""The node types the workers app owns; the registry's loader imports this module (``nodetypes``
of every installed app). Each executor module registers its type with ``@executor``."""

from workers.executors import flow, http, transform  # noqa: F401
