"""Approval forms: the JSON Schema a ``hitl`` node asks its approvers to fill, made safe to run in
the web process.

A form is user input that the web tier compiles and evaluates at decision time, so three things
are refused that a general JSON Schema library allows:

- **Retrieval.** ``$ref`` is local only (``#`` or ``#/...``); ``$id``, ``$anchor`` and the
  dynamic references are not part of a form. The validator is built on an empty ``referencing``
  registry whose retrieval always fails, so not even an old stored form can make the library
  fetch a URL or read a file.
- **Backtracking regular expressions.** ``pattern`` and ``patternProperties`` are compiled with
  RE2 (linear time in the input, no backreferences or lookaround) as CEL's ``matches`` compiles
  (``expressions.regex``: a program within RE2's default 8 MiB, each pattern's weight charged to
  the budget); a pattern RE2 cannot compile is refused at save, and at decision time too if it
  came from an older stored definition.
- **Unbounded evaluation.** A decision spends at most ``AOB_FORM_EVAL_BUDGET`` steps: a step per
  keyword evaluated, and more where its work grows with the form's value or the data (``_COSTS``)
  and for each error it makes; past it the decision is a 400. ``unevaluatedProperties`` and
  ``unevaluatedItems``, which the library evaluates by an unmetered walk of its own, are refused.

``form_problems`` judges a form at save (against ``FORM_META_SCHEMA``, a restricted meta-schema);
``form_data_failure`` checks an approver's data at decision time.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any
from urllib.parse import unquote

from django.conf import settings
from jsonschema import Draft202012Validator, FormatChecker, validators
from jsonschema.exceptions import ValidationError
from referencing import Registry
from referencing.exceptions import Unresolvable

from workflows.models import stored_size

from .expressions import FORM_REGEX_MAX_MEM, RegexRefused, regex

DIALECT = "https://json-schema.org/draft/2020-12/schema"
TYPES = ["array", "boolean", "integer", "null", "number", "object", "string"]

# Keywords whose value is one subschema, a list of them, or a map of name → subschema.
ONE = ("items", "contains", "additionalProperties", "propertyNames", "not", "if", "then", "else",
       "unevaluatedItems", "unevaluatedProperties")
MANY = ("prefixItems", "allOf", "anyOf", "oneOf")
# Walked in an older stored form, never allowed in a new one (``_refused``).
UNEVALUATED = ("unevaluatedItems", "unevaluatedProperties")
MAP = ("$defs", "properties", "patternProperties", "dependentSchemas")

_schema = {"$ref": "#/$defs/schema"}
_count = {"type": "integer", "minimum": 0}
FORM_META_SCHEMA: dict[str, Any] = {
    "$schema": DIALECT,
    "$ref": "#/$defs/schema",
    "$defs": {
        "schema": {
            "type": ["object", "boolean"],
            "properties": {
                "$schema": {"const": DIALECT},
                "$ref": {"type": "string", "pattern": "^#(/.*)?$"},
                "$comment": {"type": "string"},
                "title": {"type": "string"}, "description": {"type": "string"},
                "default": True, "examples": {"type": "array"},
                "deprecated": {"type": "boolean"}, "readOnly": {"type": "boolean"},
                "writeOnly": {"type": "boolean"},
                "type": {"anyOf": [{"enum": TYPES},
                                   {"type": "array", "items": {"enum": TYPES}, "uniqueItems": True}]},
                "enum": {"type": "array"}, "const": True,
                "multipleOf": {"type": "number", "exclusiveMinimum": 0},
                "maximum": {"type": "number"}, "exclusiveMaximum": {"type": "number"},
                "minimum": {"type": "number"}, "exclusiveMinimum": {"type": "number"},
                "maxLength": _count, "minLength": _count,
                "pattern": {"type": "string", "format": "regex"},
                "format": {"type": "string"},
                "maxItems": _count, "minItems": _count, "uniqueItems": {"type": "boolean"},
                "maxContains": _count, "minContains": _count,
                "maxProperties": _count, "minProperties": _count,
                "required": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
                "dependentRequired": {"type": "object",
                                      "additionalProperties": {"type": "array", "items": {"type": "string"}}},
                **dict.fromkeys([key for key in ONE if key not in UNEVALUATED], _schema),
                **{key: {"type": "array", "items": _schema} for key in MANY},
                **{key: {"type": "object", "additionalProperties": _schema} for key in MAP},
                "patternProperties": {"type": "object", "propertyNames": {"format": "regex"},
                                      "additionalProperties": _schema},
            },
            "additionalProperties": False,
        },
    },
}


@dataclass(frozen=True)
class FormProblem:
    path: str  # a JSON Pointer into the form (at save) or into the approver's data (at decision)
    rule: str
    message: str


class BudgetExceeded(Exception):
    """The form's evaluation went past ``AOB_FORM_EVAL_BUDGET`` steps (its args: what would have)."""


class PatternRefused(Exception):
    def __init__(self, pattern: str, reason: str) -> None:
        super().__init__(f"pattern {pattern[:100]!r} is not supported by the linear-time engine (RE2): {reason}")
        self.pattern = pattern


def _free(*_: Any) -> None:
    """A compile charged to no form: a pattern of our own schemas (``validation.SchemaValidator``)."""


def compile_pattern(pattern: str, budget: _Budget | None = None) -> Any:
    """The RE2 program for ``pattern``, or PatternRefused: never Python's backtracking ``re``. By
    the rule CEL's ``matches`` compiles by (``expressions.regex``: RE2 within ``FORM_REGEX_MAX_MEM``,
    a few kept), its weight charged to the form's ``budget``: 512 kept and nothing charged let
    ``\\p{L}{300}1`` (11 bytes) take 0.35 s and 5 MB, and one validation of 100 such 16 s and 344 MB.
    Within CEL's 1 MiB an ordinary name pattern, ``^[\\p{L} .'-]{1,100}$``, was refused."""
    try:
        return regex(pattern, budget.admit if budget else _free, budget.spent if budget else _free, FORM_REGEX_MAX_MEM)
    except RegexRefused as exc:
        raise PatternRefused(pattern, exc.reason) from None


def _pointer(parts: Any) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


# --- the safe validator ---------------------------------------------------------------------------

# A step's time, for what is weighed in time (a pattern, ``expressions.regex``): the default
# 50,000 steps were under 0.2 s for the costliest forms measured.
STEP_NS = 4_000


class _Budget:
    """The steps left, and what one evaluation keeps so that no keyword does the same work twice:
    the size of each value a keyword compares against (by identity: the form and the data stay
    alive while they are checked), each pattern's program, each ``enum`` as a set."""

    def __init__(self, steps: int) -> None:
        self.left = steps
        self.sizes: dict[int, int] = {}
        self.programs: dict[str, Any] = {}
        self.enums: dict[int, frozenset[Any]] = {}
        self.found: dict[tuple[str, int], bool] = {}

    def charge(self, steps: int) -> None:
        self.left -= steps
        if self.left < 0:
            raise BudgetExceeded

    def size(self, value: Any) -> int:
        known = self.sizes.get(id(value))
        if known is None:
            known = self.sizes[id(value)] = _size(value)
        return known

    def program(self, pattern: str) -> Any:
        """A form of 4,000 patterns went past ``compile_pattern``'s cache on every item: 0.16 s each."""
        known = self.programs.get(pattern)
        if known is None:
            self.charge(1 + len(pattern) // 16)
            known = self.programs[pattern] = compile_pattern(pattern, self)
        return known

    def admit(self, what: str, weighed_ns: int) -> None:
        """A pattern's compile is not started unless what it is weighed at is left (``STEP_NS``)."""
        steps = -(-weighed_ns // STEP_NS)
        if steps > self.left:
            raise BudgetExceeded(f"{what} is weighed at {steps} steps, more than the {max(0, self.left)} left")

    def spent(self, what: str, weight_ns: int) -> None:
        """A pattern's weight (``expressions.regex``), the same whether it was compiled just now or before."""
        self.admit(what, weight_ns)
        self.left -= -(-weight_ns // STEP_NS)

    def search(self, pattern: str, text: str) -> bool:
        """Whether ``pattern`` is found in ``text``, searched once an evaluation (by identity, as
        ``size``): a ``pattern`` step is charged as a DFA reads its string, and RE2 may read a large
        program's by its NFA (``\\p{L}{1,100}x`` over 20,000 CJK characters: 0.25 s), so one
        ``$ref`` to it 40 times in an ``allOf`` made a decision of 9.8 s."""
        key = (pattern, id(text))
        known = self.found.get(key)
        if known is None:
            known = self.found[key] = self.program(pattern).search(text) is not None
        return known

    def enum(self, values: list[Any]) -> frozenset[Any]:
        known = self.enums.get(id(values))
        if known is None:
            self.charge(self.size(values))
            known = self.enums[id(values)] = frozenset(_hashable(v) for v in values)
        return known


_UNSET = ValidationError("").instance  # what an error's instance is until the library names it
_budget: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("aob_form_budget", default=None)


def _program(validator: Any, pattern: str) -> Any:
    """A pattern's program, from the form's budget when a form is being checked: the definition's
    own schemas share these keywords, and a form's spent budget made a config's pattern a 500."""
    budget = _budget.get() if isinstance(validator, FormValidator) else None
    return budget.program(pattern) if budget is not None else compile_pattern(pattern)


def _found(validator: Any, pattern: str, text: str) -> bool:
    budget = _budget.get() if isinstance(validator, FormValidator) else None
    return budget.search(pattern, text) if budget is not None else compile_pattern(pattern).search(text) is not None


def _size(value: Any) -> int:
    """The JSON values in ``value`` (an object's keys counted too): what one comparison with it, or
    one pass over it, may cost."""
    count, stack = 0, [value]
    while stack:
        item = stack.pop()
        count += 1
        if isinstance(item, str):
            count += len(item) // _CHARS_A_STEP  # a message quoting it, a comparison with it
        elif isinstance(item, dict):
            count += len(item) + sum(len(key) for key in item) // _CHARS_A_STEP
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


_CHARS_A_STEP = 64  # of a string compared, quoted or searched: a step


def _keys(instance: Any) -> int:
    return len(instance) if isinstance(instance, dict) else 0


def _patterns(schema: Any) -> int:
    found = schema.get("patternProperties") if isinstance(schema, dict) else None
    return len(found) if isinstance(found, dict) else 0


# What one evaluation of a keyword costs beyond its step, where its work grows with the form's
# value or the data (a keyword's subschemas are charged as they are descended into): ``required``
# reports every missing name, ``const`` compares the data with its value, ``enum`` hashes the data
# (its set is built once, ``_Budget.enum``), an object's keys are each tried against every
# pattern, a ``pattern`` reads its string (1,500 of them over 60 KB: 0.3 s), a ``$ref`` walks its
# pointer (400 levels deep: 1 ms).
_COSTS: dict[str, Any] = {
    "$ref": lambda budget, value, instance, schema: value.count("/") if isinstance(value, str) else 0,
    "pattern": lambda budget, value, instance, schema: len(instance) // _CHARS_A_STEP if isinstance(instance, str) else 0,
    "enum": lambda budget, value, instance, schema: budget.size(instance),
    "const": lambda budget, value, instance, schema: budget.size(value),
    "required": lambda budget, value, instance, schema: len(value) if isinstance(value, list) else 0,
    "dependentRequired": lambda budget, value, instance, schema: budget.size(value),
    "properties": lambda budget, value, instance, schema: len(value) if isinstance(value, dict) else 0,
    "dependentSchemas": lambda budget, value, instance, schema: len(value) if isinstance(value, dict) else 0,
    "patternProperties": lambda budget, value, instance, schema: (1 + _keys(instance)) * _patterns(schema),
    "additionalProperties": lambda budget, value, instance, schema: _keys(instance) * (1 + _patterns(schema)),
    "uniqueItems": lambda budget, value, instance, schema: budget.size(instance) if isinstance(instance, list) else 0,
}


def _metered(name: str, keyword: Any) -> Any:
    """``keyword`` drawing on the budget: a step, what its value makes it walk, a step for each
    error that passes through it, and for each it makes the size of the data it names, which its
    message may quote whole (one ``required`` of 8,000 names on 30 items made 240,000 errors;
    3,300 ``type`` errors quoting 60 KB of data, 543 MB)."""
    cost = _COSTS.get(name)

    @functools.wraps(keyword)
    def metered(validator: Any, value: Any, instance: Any, schema: Any) -> Any:
        budget = _budget.get()
        if budget is None:
            yield from keyword(validator, value, instance, schema) or ()
            return
        budget.charge(1 + (cost(budget, value, instance, schema) if cost else 0))
        for error in keyword(validator, value, instance, schema) or ():
            # charged once for the data it quotes where first seen (a ``false`` subschema's is made
            # outside any keyword), then a step each level it passes through
            if getattr(error, "_aob_charged", False):
                budget.charge(1)
            else:
                budget.charge(1 + budget.size(instance if error.instance is _UNSET else error.instance))
                error._aob_charged = True
            yield error

    return metered


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _found(validator, pattern, instance):
        yield ValidationError(f"{instance[:100]!r} does not match {pattern[:200]!r}")


def _pattern_properties(validator: Any, patterns: dict[str, Any], instance: Any,
                        schema: Any) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        _program(validator, pattern)  # compiled (or refused) even for an object with no key
        for key, value in instance.items():
            if _found(validator, pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(validator: Any, additional: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    """The library's ``additionalProperties`` tries an object's keys against ``patternProperties``
    with Python's backtracking ``re``: ``^(a+)+$`` and a key of 30 ``a``s and a ``!`` held the web
    process for a minute. The same keyword, the patterns run by RE2."""
    if not validator.is_type(instance, "object"):
        return
    named = schema.get("properties", {})
    patterns = schema.get("patternProperties", {})
    extras = [key for key in instance if key not in named and not any(_found(validator, p, key) for p in patterns)]
    if validator.is_type(additional, "object"):
        for key in extras:
            yield from validator.descend(instance[key], additional, path=key)
    elif not additional and extras:
        names = ", ".join(repr(key[:100]) for key in sorted(extras)[:10]) + (" …" if len(extras) > 10 else "")
        one = len(extras) == 1
        if patterns:
            shown_patterns = ", ".join(repr(p[:100]) for p in sorted(patterns)[:10])
            yield ValidationError(f"{names} {'does' if one else 'do'} not match any of the regexes: {shown_patterns}")
        else:
            yield ValidationError(f"Additional properties are not allowed ({names} {'was' if one else 'were'} "
                                  "unexpected)")


def _hashable(value: Any) -> Any:
    """A key equal for values JSON Schema calls equal (1 == 1.0, but true != 1), so uniqueness is
    one pass over a set instead of the library's pairwise fallback for objects."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, dict):
        return ("object", frozenset((k, _hashable(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("array", tuple(_hashable(v) for v in value))
    return ("scalar", value)


def _unique_items(validator: Any, unique: bool, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if unique and validator.is_type(instance, "array"):
        seen: set[Any] = set()
        for item in instance:
            key = _hashable(item)
            if key in seen:
                yield ValidationError("array has non-unique elements")
                return
            seen.add(key)


def _enum(validator: Any, values: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    """One lookup in a set, not a comparison with every entry (a 250-country list on 40 line items
    was 10,000 comparisons); the message names the first few values, not all of them."""
    if not isinstance(values, list):  # an older stored form's: no data is one of it
        raise KeywordRefused(f"enum must be a list, not {type(values).__name__}")
    budget = _budget.get()
    allowed = budget.enum(values) if budget is not None else frozenset(_hashable(v) for v in values)
    if _hashable(instance) not in allowed:
        shown = ", ".join(json.dumps(v, default=str)[:100] for v in values[:10]) + (" …" if len(values) > 10 else "")
        yield ValidationError(f"{json.dumps(instance, default=str)[:100]} is not one of [{shown}]")


class KeywordRefused(Exception):
    """A keyword a form may not use, found in an older stored form at decision time."""


def _refused(name: str) -> Any:
    def refused(validator: Any, value: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
        raise KeywordRefused(f"{name} is not allowed in a form: the schema library evaluates it by walking the "
                             "form again with nothing charged to the budget, and with Python's backtracking re")
        yield  # a generator, as every keyword

    return refused


FALSE = "falseSchema"  # the keyword a ``false`` subschema is evaluated as (``_false_named``)


def _false(validator: Any, value: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    yield ValidationError("no value is allowed here")


# JSON Schema's two pattern keywords as ECMA-262 reads a pattern, in linear time: RE2's ``$`` is the
# end of the text, where Python's ``re`` matched before a final line break too. Every schema a
# definition is judged by uses them (``validation.SchemaValidator``), not only forms.
PATTERN_KEYWORDS = {"pattern": _pattern, "patternProperties": _pattern_properties}
# ``unevaluatedProperties`` and ``unevaluatedItems``: the library finds what was evaluated by a walk
# of its own, through ``$ref`` and ``dependentSchemas`` with no step charged (18 levels of two took
# 12 s) and patterns run by Python's ``re``: refused at save (the meta-schema) and here.
_SAFE = {**PATTERN_KEYWORDS, "additionalProperties": _additional_properties, "uniqueItems": _unique_items,
         "enum": _enum, **{name: _refused(name) for name in UNEVALUATED}}
FormValidator = validators.extend(
    Draft202012Validator,
    validators={**{name: _metered(name, _SAFE.get(name, keyword))
                   for name, keyword in Draft202012Validator.VALIDATORS.items()}, FALSE: _metered(FALSE, _false)},
)
# No resource is registered and retrieval always fails: a reference is local or it is an error.
NO_RETRIEVAL = Registry()


def _validator(form: Any) -> Any:
    return FormValidator(form, registry=NO_RETRIEVAL)


@contextlib.contextmanager
def one_budget() -> Iterator[None]:
    """Every form checked inside draws from one ``AOB_FORM_EVAL_BUDGET``: a definition's forms share
    it, so a thousand forms cost what one may (each had its own: 900 forms took 71 s to save)."""
    token = _budget.set(_Budget(settings.AOB_FORM_EVAL_BUDGET))
    try:
        yield
    finally:
        _budget.reset(token)


def _first_error(form: Any, instance: Any) -> ValidationError | None:
    """The first of ``instance``'s errors against ``form`` by path (one kept at a time, not all)."""
    if _budget.get() is None:  # on its own: a budget of its own
        with one_budget():
            return _first_error(form, instance)
    return min(_validator(_false_named(form)).iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path],
               default=None)


def _false_named(schema: Any) -> Any:
    """``schema`` with each ``false`` subschema as ``{FALSE: true}``: the library reports a ``false``
    subschema's error outside any keyword, with no rule (``form.None``), the path of the object
    above it, and uncharged."""
    if schema is False:
        return {FALSE: True}
    if not isinstance(schema, dict):
        return schema
    named = dict(schema)
    for key in ONE:
        if key in named and not (key == "additionalProperties" and isinstance(named[key], bool)):  # its own
            named[key] = _false_named(named[key])
    for key in MANY:
        if isinstance(named.get(key), list):
            named[key] = [_false_named(child) for child in named[key]]
    for key in MAP:
        if isinstance(named.get(key), dict):
            named[key] = {name: _false_named(child) for name, child in named[key].items()}
    return named


# --- at save --------------------------------------------------------------------------------------

_regex_format = FormatChecker(formats=())


@_regex_format.checks("regex", raises=PatternRefused)
def _is_re2(value: object) -> bool:
    """Compiled at save, charged to the forms' budget (``form_problems`` gives it one), once a
    pattern as an evaluation is: a pattern repeated in a form weighs as one."""
    if isinstance(value, str):
        budget = _budget.get()
        if budget is None:
            compile_pattern(value)
        else:
            budget.program(value)
    return True


_meta = Draft202012Validator(FORM_META_SCHEMA, format_checker=_regex_format, registry=NO_RETRIEVAL)


def _schemas(schema: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """Every subschema of a form, ``true`` and ``false`` too, with its path (iterative)."""
    stack = [(path, schema)]
    while stack:
        here, node = stack.pop()
        if isinstance(node, bool):
            yield here, node
        if not isinstance(node, dict):
            continue
        yield here, node
        for key in ONE:
            if key in node:
                stack.append(((*here, key), node[key]))
        for key in MANY:  # shapes checked again: cheap, and the walk never trusts its caller
            children = node.get(key)
            for i, child in enumerate(children if isinstance(children, list) else ()):
                stack.append(((*here, key, i), child))
        for key in MAP:
            children = node.get(key)
            for name, child in (children.items() if isinstance(children, dict) else ()):
                stack.append(((*here, key, name), child))


def _resolves(paths: set[tuple[str, ...]], ref: str) -> bool:
    """Whether a local ``$ref`` names one of the form's subschemas (``paths``: each as text): a
    reference into ``default``, ``const`` or ``examples`` made a value the meta-schema never judged
    a schema, with any keyword in it."""
    if ref == "#":
        return () in paths
    if not ref.startswith("#/"):
        return False
    # as the library reads a fragment: percent-decoded, then split, then ~1 and ~0
    return tuple(raw.replace("~1", "/").replace("~0", "~") for raw in unquote(ref[2:]).split("/")) in paths


def _meta_rule(err: ValidationError) -> tuple[str, str]:
    where = err.absolute_path[-1] if err.absolute_path else None
    if where == "$ref":
        return "form.remote_ref", f"$ref {str(err.instance)[:200]!r} is not local: a form may refer only to " \
                                  "its own definitions (#/...); nothing is ever fetched"
    if err.validator == "format" and isinstance(err.cause, PatternRefused):
        return "form.pattern", str(err.cause)
    if err.validator == "additionalProperties":
        return "form.keyword", err.message.replace("Additional properties are not allowed",
                                                   "keyword(s) not allowed in a form")
    return f"form.{err.validator}", err.message


# A form is stored on its approval and answered with it in every inbox that lists it; a reference
# in it (``{"default": "$nodes.fetch"}``) resolves when the node runs, to as much as 16 MiB.
FORM_MAX_BYTES = 64 * 1024
FORM_MAX_PROBLEMS = 20  # a form's problems read at save: the first ones, never each of 30,000


def form_problems(form: Any) -> list[FormProblem]:
    """What is wrong with ``form`` as an approval form; empty when it is safe to store and run."""
    size = stored_size(form)
    if size > FORM_MAX_BYTES:
        return [FormProblem("", "form.max_bytes", f"the form is {size} bytes; at most {FORM_MAX_BYTES} are kept")]
    if _budget.get() is None:  # on its own (a node's run): a budget of its own, its patterns' compiles charged
        with one_budget():
            return form_problems(form)
    try:
        found = list(islice(_meta.iter_errors(form), FORM_MAX_PROBLEMS))
    except BudgetExceeded as exc:  # compiling its patterns (``_is_re2``)
        return [FormProblem("", "form.budget", "compiling the form's patterns passes the "
                            f"{settings.AOB_FORM_EVAL_BUDGET} steps its checks may spend, shared by the "
                            "workflow's forms" + (f" ({exc})" if str(exc) else ""))]
    problems = []
    for err in sorted(found, key=lambda e: [str(p) for p in e.absolute_path]):
        rule, message = _meta_rule(err)
        where = list(err.absolute_path)
        if err.validator == "additionalProperties" and isinstance(err.instance, dict):  # name the keyword
            allowed = FORM_META_SCHEMA["$defs"]["schema"]["properties"]
            where += [key for key in err.instance if key not in allowed][:1]
        problems.append(FormProblem(_pointer(where), rule, message))
    if problems:
        return problems
    schemas = list(_schemas(form))
    paths = {tuple(str(p) for p in path) for path, _ in schemas}
    for path, schema in ((path, node) for path, node in schemas if isinstance(node, dict)):
        ref = schema.get("$ref")
        if isinstance(ref, str) and not _resolves(paths, ref):
            problems.append(FormProblem(_pointer((*path, "$ref")), "form.ref_unresolved",
                                        f"$ref {ref[:200]!r} does not point to a schema in this form"))
    if not problems:  # a reference loop that never consumes input shows on the empty answer already
        try:
            _first_error(form, {})
        except Unresolvable as exc:  # a reference the library reads otherwise than ``_resolves``
            problems.append(FormProblem("", "form.ref_unresolved", f"a $ref does not resolve ({str(exc)[:200]})"))
        except (BudgetExceeded, RecursionError):
            problems.append(FormProblem("", "form.budget", "the form does not finish evaluating an empty answer "
                                        f"within {settings.AOB_FORM_EVAL_BUDGET} steps, shared by the "
                                        "workflow's forms (a $ref loop?)"))
    return problems


# --- at decision time -----------------------------------------------------------------------------

def form_data_failure(form: Any, data: Any) -> FormProblem | None:
    """The first way ``data`` fails ``form``, or None. Whatever the stored form holds, this never
    fetches, never backtracks and stops after the evaluation budget."""
    try:
        first = _first_error(form, data)
    except PatternRefused as exc:
        return FormProblem("", "form.pattern", str(exc))
    except KeywordRefused as exc:
        return FormProblem("", "form.keyword", str(exc))
    except Unresolvable as exc:
        return FormProblem("", "form.remote_ref", f"the form refers to something outside itself ({exc}); "
                           "nothing is fetched")
    except (BudgetExceeded, RecursionError) as exc:
        return FormProblem("", "form.budget", f"checking the data against the form took more than "
                           f"{settings.AOB_FORM_EVAL_BUDGET} steps" + (f" ({exc})" if str(exc) else ""))
    if first is None:
        return None
    return FormProblem(_pointer(first.absolute_path), "form.false" if first.validator == FALSE else
                       f"form.{first.validator}", first.message)
