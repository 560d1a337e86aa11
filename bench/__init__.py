"""`make bench`: AOB measured against plain Celery on the same machine, in the same run (issue 10).

Kept import-free: ``bench.baseline`` is a Celery app that worker processes import without Django.
"""
