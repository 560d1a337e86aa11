"""New rows of several models in one statement: each group the INSERT ``bulk_create`` would send,
joined as data-modifying CTEs.

A run's start writes the run, its entry node runs and its first events. As three ORM inserts in
a transaction that is five round trips (with ``BEGIN`` and ``COMMIT``) and the ORM's per-call
work three times; one statement is one round trip, atomic by itself. The SQL of each insert is
still the ORM's (``SQLInsertCompiler``: columns, defaults, ``auto_now_add``, value preparation);
only the joining is ours. PostgreSQL checks the foreign keys between the groups at the end of the
statement, so a group may refer to rows of another. ``tests/web/test_inserts.py`` compares the
rows with ``bulk_create``'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import connections
from django.db.models import AutoField, Model, QuerySet
from django.db.models.expressions import DatabaseDefault
from django.db.models.sql import InsertQuery


def insert_together(*groups: Sequence[Model], using: str = "default") -> None:
    """Insert every group's new instances (one model per group) in one statement. As
    ``bulk_create`` does, each instance's generated primary key is set from ``RETURNING`` and the
    instances are marked saved. No signals, as with ``bulk_create``. A value the database would
    fill (a ``db_default`` without a Python default) is refused: it would not be read back."""
    connection = connections[using]
    ctes: list[str] = []
    params: list[Any] = []
    returning: list[tuple[int, Sequence[Model]]] = []
    for index, objs in enumerate(groups):
        if not objs:
            continue
        model = type(objs[0])
        opts = model._meta
        QuerySet(model, using=using)._prepare_for_bulk_create(objs)  # pk defaults, related ids
        generated = not objs[0]._is_pk_set()
        if any(type(obj) is not model or obj._is_pk_set() == generated for obj in objs):
            raise ValueError(f"group {index}: one model per group, primary keys all set or all generated")
        fields = [f for f in opts.concrete_fields
                  if not f.generated and not (generated and isinstance(f, AutoField))]
        for field in [f for f in fields if f.has_db_default()]:
            for obj in objs:
                if isinstance(getattr(obj, field.attname), DatabaseDefault):
                    raise ValueError(f"{opts.label}.{field.name}: a database default would not be read back")
        query = InsertQuery(model)
        query.insert_values(fields, objs, raw=False)
        compiler = query.get_compiler(using=using)
        compiler.returning_fields = [opts.pk] if generated else None
        [(sql, group_params)] = compiler.as_sql()
        ctes.append(f"i{index} AS ({sql})")
        params.extend(group_params)
        if generated:
            returning.append((index, objs))
    if not ctes:
        return
    quote = connection.ops.quote_name
    select = " UNION ALL ".join(f"SELECT {index}, {quote(objs[0]._meta.pk.column)} FROM i{index}"  # noqa: S608 - a column name
                                for index, objs in returning) or "SELECT NULL, NULL WHERE false"
    with connection.cursor() as cursor:
        cursor.execute(f"WITH {', '.join(ctes)} {select}", params)
        rows = cursor.fetchall()
    # RETURNING answers in the order of VALUES, as bulk_create relies on; each CTE's rows in turn
    by_group: dict[int, list[Any]] = {}
    for index, pk in rows:
        by_group.setdefault(index, []).append(pk)
    for index, objs in returning:
        pks = by_group.get(index, [])
        if len(pks) != len(objs):
            raise RuntimeError(f"group {index}: {len(pks)} keys returned for {len(objs)} rows")
        for obj, pk in zip(objs, pks, strict=True):
            obj.pk = pk
    for objs in groups:
        for obj in objs:
            obj._state.adding = False
            obj._state.db = using
