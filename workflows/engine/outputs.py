"""Strict outputs: what an executor returns is stored as strict JSON, by one rule, here.

Applied where every executor's output is stored (``execution.execute``, ``execution.resume``), so
a value JSON cannot hold fails its node at once with a message naming where it is, instead of
crashing the completion (which looked like a lost worker: three attempts and a ``WorkerLost``).

The rule:

- ``NaN``, ``Infinity`` and ``-Infinity`` (a remote's non-standard JSON, ``1.0/0.0`` in CEL): the
  node fails with ``NonJSONOutput`` naming the JSON Pointer of the value; not retried. In an error
  payload they become ``null`` (a failure is recorded whatever it holds). A tiny number (a
  p-value's 1e-30) is stored as it is, and measured as ``jsonb`` writes it out, in full
  (``size_of``: 5e-324 is 326 bytes against AOB_MAX_NODE_OUTPUT_BYTES).
- Timestamps (``datetime``, ``date``, ``time``): ISO 8601 strings, UTC written ``Z``.
- Durations (``timedelta``): ISO 8601 durations (``PT1M30S``).
- Bytes: standard base64 strings.
- Map keys: strings (``1`` → ``"1"``, ``true`` → ``"true"``); tuples and sets: arrays.
- Strings: NUL (``jsonb`` cannot hold it) and lone surrogates become U+FFFD.
- Anything else: ``NonJSONOutput`` naming its path and type (in an error payload: its text).
- Nesting past ``OUTPUT_MAX_DEPTH``: ``NonJSONOutput`` naming the path, rule ``max_depth`` (in an
  error payload: ``{"truncated": true, "rule": "max_depth", "limit"}`` in its place).

And one rule for how large one output may be (``refuse_large_output``): its JSON as stored past
``AOB_MAX_NODE_OUTPUT_BYTES`` fails the node with ``OutputTooLarge`` before anything of it is
written (``execution.complete`` and ``resume``, ``pure.Evaluator``: where each measures the text it
stores), so an answer that carries one node's output whole is bounded by it.
"""

from __future__ import annotations

import base64
import datetime
import math
from collections.abc import Sequence
from typing import Any

import isodate
from django.conf import settings
from django.db import connection

from aob_project.exceptions import AobError
from workflows.limits import encodable as _encodable
from workflows.models import canonical_json
from workflows.storage import kept_added

# How deep a stored output may nest: as deep as every reader can read it back. Python's parser and
# encoder spend a frame of the same 1,000 a level, CEL's conversion and ``copy.deepcopy`` two, and
# the web tier reads an output far up its stack (Django, DRF, the serializer): a remote's body of
# 950 levels parsed in a worker, was stored, and every GET /runs/{id} and details of its run was a
# 500. An http node's output is its body and one level, so a body nests at most one less (past it,
# the body is its text, as a body past the parser always was).
OUTPUT_MAX_DEPTH = 256


def depth_within(value: Any, limit: int) -> bool:
    """Whether ``value`` nests at most ``limit`` deep (a scalar 0, ``[]`` 1): one level of containers
    at a time, so no recursion and nothing stacked per value."""
    return _plain(value, limit, keys=False)


class NonJSONOutput(AobError):
    code = "NonJSONOutput"


class OutputTooLarge(AobError):
    code = "OutputTooLarge"


# A run's ``usage.output_bytes`` with an output of ``%(size)s`` bytes (``size_of``) added: every
# output a run stores counts once against AOB_MAX_RUN_OUTPUT_BYTES and what its owner's runs keep.
# Added in SQL, never written back from a value read before (a decision's, a patch's): what another
# writer added under the same lock meanwhile stays.
OUTPUT_BYTES_ADDED = "jsonb_set(r.usage, '{output_bytes}', to_jsonb(COALESCE((r.usage->>'output_bytes')::bigint, 0) + %(size)s))"
# ... and the resolved inputs of the node runs ``%(node_runs)s`` written since ``%(inputs_were)s``
# bytes of them were counted (``usage.kept_bytes``: what the owner's runs keep, not the run's cap)
INPUTS_WRITTEN = ("(SELECT COALESCE(SUM(n.input_bytes), 0) FROM workflows_noderun n WHERE n.id = ANY(%(node_runs)s))"
                  " - %(inputs_were)s")
OUTPUT_COUNTED = (f"UPDATE workflows_run r SET usage = {kept_added(OUTPUT_BYTES_ADDED, INPUTS_WRITTEN)} "  # noqa: S608 - no input
                  "WHERE r.id = %(run_id)s RETURNING (r.usage->>'output_bytes')::bigint")


def count_output(run_id: Any, size: int, *, inputs_of: Sequence[int] = (), inputs_were: int = 0) -> int | None:
    """Add ``size`` bytes of stored output to the run's ``usage.output_bytes`` (a negative size: an
    output taken back, a reopened gate's), and to its ``usage.kept_bytes`` the resolved inputs the
    node runs ``inputs_of`` hold now less ``inputs_were`` (what was counted of them before this
    write: 0 for new rows); the output count now (None: nothing to add). Under the run's lock, as
    every writer of ``usage``."""
    if not size and not inputs_of:
        return None
    with connection.cursor() as cursor:
        cursor.execute(OUTPUT_COUNTED, {"size": size, "run_id": run_id, "node_runs": list(inputs_of),
                                        "inputs_were": inputs_were})
        row = cursor.fetchone()
    return int(row[0]) if row and row[0] is not None else None


def refuse_large_output(size: int) -> None:
    """Raise ``OutputTooLarge`` when an output of ``size`` bytes (its ``canonical_json`` in UTF-8,
    as its artifact and node run store it) passes ``AOB_MAX_NODE_OUTPUT_BYTES``. Not transient: the
    same work makes the same output."""
    limit = settings.AOB_MAX_NODE_OUTPUT_BYTES
    if size > limit:
        raise OutputTooLarge(f"the node's output is {size} bytes; at most {limit} are stored "
                             "(AOB_MAX_NODE_OUTPUT_BYTES)",
                             extra={"rule": "max_output_bytes", "limit": limit, "bytes": size, "transient": False})


def strict_json(value: Any, *, non_finite: str = "fail") -> Any:
    """``value`` as strict JSON by the rule above; ``non_finite`` is ``"fail"`` or ``"null"``."""
    try:
        text = canonical_json(value)
    except (TypeError, ValueError, RecursionError):  # RecursionError: nested past the encoder, far past the bound
        pass
    else:
        if "\\u0000" not in text and _encodable(text) and _plain(value):
            return value  # already strict: stored exactly as serialised (tuples as arrays)
    return _walk(value, "", non_finite, 1)


def _plain(value: Any, limit: int = OUTPUT_MAX_DEPTH, *, keys: bool = True) -> bool:
    """Every map key is a string (json.dumps would write others, but sort them by their own type;
    with ``keys``), and nothing nests past ``limit``. A level of containers at a time."""
    level = [value] if isinstance(value, dict | list | tuple) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return False
        below: list[Any] = []
        for item in level:
            if isinstance(item, dict):
                for k, v in item.items():
                    if keys and not isinstance(k, str):
                        return False
                    if isinstance(v, dict | list | tuple):
                        below.append(v)
            else:
                below.extend(v for v in item if isinstance(v, dict | list | tuple))
        level = below
    return True


def _text(value: str) -> str:
    if not _encodable(value):
        value = value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return value.replace("\x00", "\ufffd")


def _key(key: Any, path: str) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, str):
        return _text(key)
    if isinstance(key, int | float):
        return str(key)
    raise NonJSONOutput(f"the output is not JSON: a map key at {path or '/'} is a {type(key).__name__}",
                        extra={"path": path or "/", "transient": False})


def _pointer(path: str, key: str) -> str:
    return f"{path}/{key.replace('~', '~0').replace('/', '~1')}"


def _too_deep(path: str, non_finite: str) -> Any:
    if non_finite == "null":  # an error payload: recorded whatever it holds
        return {"truncated": True, "rule": "max_depth", "limit": OUTPUT_MAX_DEPTH}
    raise NonJSONOutput(f"the output nests deeper than {OUTPUT_MAX_DEPTH} levels at {path or '/'}",
                        extra={"path": path or "/", "rule": "max_depth", "limit": OUTPUT_MAX_DEPTH, "transient": False})


def _walk(value: Any, path: str, non_finite: str, depth: int) -> Any:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        if non_finite == "null":
            return None
        raise NonJSONOutput(
            f"the output is not JSON: {path or 'the output'} is {value!r} (JSON has no NaN or Infinity)",
            extra={"path": path or "/", "value": repr(value), "transient": False})
    if isinstance(value, dict):
        if depth > OUTPUT_MAX_DEPTH:
            return _too_deep(path, non_finite)
        out: dict[str, Any] = {}
        for k, v in value.items():
            key = _text(str(k)) if non_finite == "null" and not isinstance(k, str | int | float | bool) else _key(k, path)
            out[key] = _walk(v, _pointer(path, key), non_finite, depth + 1)
        return out
    if isinstance(value, list | tuple | set | frozenset):
        if depth > OUTPUT_MAX_DEPTH:
            return _too_deep(path, non_finite)
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
        return [_walk(v, f"{path}/{i}", non_finite, depth + 1) for i, v in enumerate(items)]
    if isinstance(value, datetime.datetime):
        text = value.isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return isodate.duration_isoformat(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if non_finite == "null":  # an error payload: recorded whatever it holds
        return _text(str(value))
    raise NonJSONOutput(f"the output is not JSON: {path or 'the output'} is a {type(value).__name__}",
                        extra={"path": path or "/", "type": type(value).__name__, "transient": False})
