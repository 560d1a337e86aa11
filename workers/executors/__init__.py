"""The executors that need no app of their own: ``http``, ``transform``, and the coordinator's
inline ``conditional`` and ``loop``. ``workers/nodetypes.py`` registers them."""
