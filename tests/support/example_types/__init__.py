"""A Django app of the test stack only (``AOB_EXTRA_APPS``, set by tests/plugins/services.py): it
shows that a node type is one module and one registration, as docs/ARCHITECTURE.md says."""
