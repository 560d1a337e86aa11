"""Reads the ORM compiles once: a queryset's SQL kept per thread, new values bound per call.

Compiling a queryset costs more CPU than running it for the web tier's hottest reads (the token
behind every API request, a workflow by tag, a run by id): building the query and turning it into
SQL is about half a millisecond, the round trip to PostgreSQL a fraction of that. A
``CompiledRead`` asks the ORM for the SQL once, with a distinct probe value for each argument,
finds where each probe lands among the statement's parameters, and afterwards only binds the
call's values there. The SQL, its joins and its columns stay the ORM's, derived from the models;
rows pass through the ORM's own converters and, for a model queryset, become instances (with their
``select_related`` objects) as the ORM's ``ModelIterable`` makes them. ``tests/web/test_compiled.py``
compares reads with the querysets they come from.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import connections
from django.db.models import QuerySet
from django.db.models.query import get_related_populators

# Probe values no real argument takes (no key, tag or id holds a newline; no user id is negative);
# the arguments of one read need probes that differ, in type or value.
PROBE_TEXT = "\ncompiled-read-probe"
PROBE_INT = -7_319_604
PROBE_UUID = uuid.UUID(int=0x5E7)


def _is_probe(param: Any, probe: Any) -> bool:
    """``param`` is ``probe`` as the backend passes it: the same type, or an integer it wrapped."""
    if type(param) is type(probe):
        return bool(param == probe)
    return type(probe) is int and isinstance(param, int) and not isinstance(param, bool) and param == probe


@dataclass(frozen=True)
class _Compiled:
    sql: str
    # per parameter: the argument bound there, or a constant; for an argument the backend wrapped
    # (psycopg's ``Int4`` for an integer compared with an integer column), the wrapper as constant
    slots: list[tuple[str | None, Any]]
    compiler: Any
    # a model queryset's: its class (None for values_list), its columns' attnames and their span
    # in a row, the select_related populators and the annotations' positions
    model: Any
    init_list: list[str]
    span: tuple[int, int]
    populators: list[Any]
    annotations: dict[str, int]


class CompiledRead:
    """``build(**probes)`` returns the read as a queryset; ``rows(**values)`` runs its SQL with
    ``values`` in the probes' places (a ``values_list`` queryset's tuples), ``objects(**values)``
    makes model instances of the rows. A value must have its probe's type: the ORM's own
    preparation of a value (a string turned into a UUID, say) is not repeated per call."""

    def __init__(self, build: Callable[..., QuerySet[Any]], **probes: Any) -> None:
        self._build = build
        self._probes = probes
        self._local = threading.local()  # a compiler is bound to its thread's connection

    def _compiled(self) -> _Compiled:
        compiled: _Compiled | None = getattr(self._local, "compiled", None)
        if compiled is None:
            queryset = self._build(**self._probes)
            compiler = queryset.query.get_compiler(using=queryset.db)
            sql, params = compiler.as_sql()
            slots: list[tuple[str | None, Any]] = []
            for param in params:
                names = [name for name, probe in self._probes.items() if _is_probe(param, probe)]
                wrapper = type(param) if names and type(param) is not type(self._probes[names[0]]) else None
                slots.append((names[0], wrapper) if names else (None, param))
            missing = set(self._probes) - {name for name, _ in slots}
            if missing:
                raise ValueError(f"probes not among the statement's parameters: {sorted(missing)}")
            klass_info = compiler.klass_info
            init_list: list[str] = []
            span, populators = (0, 0), []
            if klass_info is not None:  # a model queryset (ModelIterable's preparation, once)
                fields = klass_info["select_fields"]
                span = (fields[0], fields[-1] + 1)
                init_list = [column[0].target.attname for column in compiler.select[span[0]:span[1]]]
                populators = get_related_populators(klass_info, compiler.select, queryset.db)
            compiled = self._local.compiled = _Compiled(sql, slots, compiler, klass_info and klass_info["model"],
                                                        init_list, span, populators, compiler.annotation_col_map or {})
        return compiled

    def _results(self, values: dict[str, Any]) -> tuple[_Compiled, Any]:
        compiled = self._compiled()
        for name, value in values.items():
            if type(value) is not type(self._probes[name]):
                raise TypeError(f"{name}: {type(value).__name__}, not {type(self._probes[name]).__name__}")
        params = [constant if name is None else values[name] if constant is None else constant(values[name])
                  for name, constant in compiled.slots]
        with connections[compiled.compiler.using].cursor() as cursor:
            cursor.execute(compiled.sql, params)
            fetched = cursor.fetchall()
        return compiled, compiled.compiler.results_iter(results=[fetched])

    def rows(self, **values: Any) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self._results(values)[1]]

    def objects(self, **values: Any) -> list[Any]:
        compiled, rows = self._results(values)
        if compiled.model is None:
            raise TypeError("objects() reads a model queryset; rows() a values_list one")
        start, end = compiled.span
        out = []
        for row in rows:
            obj = compiled.model.from_db(compiled.compiler.using, compiled.init_list, row[start:end])
            for populator in compiled.populators:
                populator.populate(row, obj)
            for name, position in compiled.annotations.items():
                setattr(obj, name, row[position])
            out.append(obj)
        return out
