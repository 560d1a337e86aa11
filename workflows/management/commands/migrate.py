"""Django's ``migrate``, one process at a time per database.

Every container of a deployment may run ``migrate`` as it starts (compose's ``migrate`` service, a
second host, a rolling deploy): two at once both created the same table and one died with
PostgreSQL's ``IntegrityError`` on ``pg_type``. A session advisory lock makes them take turns; the
second then finds nothing left to apply.
"""

from __future__ import annotations

import time
from typing import Any

from django.core.management.commands.migrate import Command as DjangoMigrate
from django.db import connections

MIGRATE_LOCK = 0x414F425F4D494752  # "AOB_MIGR": pg_advisory_lock's key for migrations
WAIT_S = 0.5


class Command(DjangoMigrate):
    @staticmethod
    def _locked(connection: Any) -> bool:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [MIGRATE_LOCK])
            return bool(cursor.fetchone()[0])

    def handle(self, *args: Any, **options: Any) -> None:
        connection = connections[options["database"]]
        if connection.vendor != "postgresql":
            return super().handle(*args, **options)
        told = False
        while not self._locked(connection):
            # asked again, never waited on in one statement: a waiting statement's snapshot would hold
            # up the other's CREATE INDEX CONCURRENTLY (0018), which PostgreSQL ends as a deadlock
            if not told:
                self.stdout.write("Another migrate is running on this database; waiting for it to finish")
                told = True
            time.sleep(WAIT_S)
        try:
            return super().handle(*args, **options)
        finally:
            if connection.connection is not None:  # a closed connection has let the lock go already
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [MIGRATE_LOCK])
