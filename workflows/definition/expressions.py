"""CEL, the one expression language of AOB (edge conditions, loop conditions, transforms).

We use ``common-expression-language`` (Python bindings of the Rust ``cel`` crate): a maintained,
sandboxed implementation of Google's CEL, compiled once at validation time and a few µs per
evaluation. Never ``eval``. ``$.x`` is shorthand for ``output.x``.

The binding has no cost or time limit of its own and holds the GIL while it evaluates, so a
thread or a signal cannot stop it, and a fork per evaluation costs ~10 ms. The bounds are ours,
all in this module, with the operator's ceilings from settings:

- at compile time (a workflow save refuses what breaks them, with path and rule): the source
  size, the number of comprehension macros (``all``, ``exists``, ``exists_one``, ``map``,
  ``filter``) and how deeply they nest;
- at evaluation: a deadline. Each comprehension body is rewritten to call a function of ours
  first (``xs.map(x, f(x))`` runs as ``xs.map(x, __aob_tick() ? (f(x)) : null)``), which raises
  once the deadline has passed; the binding then aborts the evaluation. Only comprehensions
  loop, so that bounds the time of everything else but what the source cannot show, which is
  estimated against the size of the values it runs over before it runs: concatenation
  (``s + s + ... + s`` over a large ``s`` copies quadratically) and many references (a list of
  400 ``inputs.s`` holds 400 copies);
- converting the context to CEL values is the binding's work, before any tick: only what the
  expression reads is handed to it (``activation``: the field paths the lexer finds, each
  sub-value whole at its path's end), that is weighed against what is left of the deadline
  before it is converted (``_admit``), and a decision's conditions share one deadline
  (``capped``): once it has passed, the next does not start;
- one ``matches`` call is the binding's work too, with no tick inside: every call is renamed to
  ours (``shape``), which runs it with RE2 and refuses, before it starts, one whose worst case
  (its program's size times the text's bytes, ``MATCH_NS``) could not end by the deadline.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import cel
import re2
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
KEYWORDS = frozenset({"true", "false", "null", "in"})
# CEL's type names (``type(output.x) == int``): the binding lists one a source names among its
# variables, yet resolves it without being given it (``dyn`` it does not know).
CEL_TYPE_NAMES = frozenset({"int", "uint", "double", "bool", "string", "bytes", "list", "map", "null_type", "type"})
TICK = "__aob_tick"
# Every ``matches`` call, ``s.matches(p)`` and ``matches(s, p)`` alike, is renamed to ours (``shape``).
MATCHES = "__aob_matches"
# Up to this many ``+`` the copying is at most a few times the largest value: no estimate needed.
CHEAP_CONCATENATIONS = 3
# Up to this many references an expression holds at most a few times the largest value it reads,
# which is in memory already: no weighing needed (a condition's usual few cost nothing more).
CHEAP_REFERENCES = 4


class ExpressionError(ValueError):
    """A CEL source that cannot be compiled or evaluated; ``rule`` names the bound it broke."""

    def __init__(self, message: str, rule: str = "syntax") -> None:
        super().__init__(message)
        self.rule = rule

    def named(self, kind: str) -> str:
        """The rule an error answer names for this, of an expression of ``kind`` (``condition``,
        ``cel``): ``<kind>_syntax`` or ``<kind>_evaluation`` for the source's own mistake,
        ``cel.<bound>`` (``cel.max_source_bytes``, ``cel.timeout``) for a bound it met."""
        return f"{kind}_{self.rule}" if self.rule in ("syntax", "evaluation") else f"cel.{self.rule}"


def expand_shorthand(source: str) -> str:
    """Rewrite ``$.`` to ``output.`` outside string literals."""
    out: list[str] = []
    quote: str | None = None
    i = 0
    while i < len(source):
        ch = source[i]
        if quote:
            out.append(ch)
            if ch == "\\" and i + 1 < len(source):
                out.append(source[i + 1])
                i += 2
                continue
            if ch == quote:
                quote = None
        elif ch in ("'", '"'):
            quote = ch
            out.append(ch)
        elif ch == "$" and source.startswith("$.", i):
            out.append("output.")
            i += 2
            continue
        else:
            out.append(ch)
        i += 1
    return "".join(out)


# --- static shape --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """What the lexer sees of a source: its comprehension macros, how deeply they nest, how many
    ``+`` it has, the variables it reads (each as the path of field names and list indexes that
    follows it: ``inputs.a.b[0]`` is ``("inputs", "a", "b", 0)``), and the source with every
    comprehension body
    guarded by the tick and every ``matches`` call renamed to ours. ``references`` leaves out those only asked a boolean or a number
    (``COPYING_METHODS``); ``reads`` has every one."""

    macros: int
    depth: int
    concatenations: int
    guarded: str
    references: tuple[tuple[str | int, ...], ...] = ()
    reads: tuple[tuple[str | int, ...], ...] = ()
    matches: int = 0  # ``matches`` calls, each renamed to ``MATCHES`` in ``guarded``
    bound: frozenset[str] = frozenset()  # the comprehensions' own variables (``xs.exists(i, …)``: ``i``)


def _string_end(source: str, i: int) -> int:
    """Index just past the string literal starting at ``i`` (prefixes r/b/R/B already skipped)."""
    raw = i > 0 and source[i - 1] in "rR" or (i > 1 and source[i - 2] in "rR" and source[i - 1] in "bB")
    quote = source[i]
    triple = source.startswith(quote * 3, i)
    delim = quote * 3 if triple else quote
    j = i + len(delim)
    while j < len(source):
        if source[j] == "\\" and not raw:
            j += 2
            continue
        if source.startswith(delim, j):
            return j + len(delim)
        if source[j] == "\n" and not triple:
            break
        j += 1
    return len(source)  # unterminated: the compiler will say so


# Methods whose result holds (a part of) the value they are called on; the others answer a
# boolean or a number (``contains``, ``size``, ``exists``, …), so the value they read copies nothing.
COPYING_METHODS = frozenset({"map", "filter"})


# What CEL reads as a blank between two tokens; a ``//`` comment, to the next line feed, is one too.
BLANKS = " \t\r\n\f"


def _skip_blanks(source: str, k: int) -> int:
    """The index of the next token from ``k`` on, blanks and comments skipped: ``xs. // …\n map(``
    is a macro to CEL, and ``xs.\fmap(`` too (the binding takes a form feed as a blank)."""
    n = len(source)
    while k < n:
        if source[k] in BLANKS:
            k += 1
        elif source.startswith("//", k):
            newline = source.find("\n", k)
            k = n if newline < 0 else newline
        else:
            break
    return k


def _field_path(source: str, word: str, j: int) -> tuple[tuple[str | int, ...], str | None]:
    """The reference starting with ``word`` (ending at ``j``): the field names that follow it
    (``.name``, or ``["name"]`` as a node id with a ``-`` needs) and list indexes written as
    decimal digits (``[0]``), and the method it is called with, if any (``.name(``). Any other
    index or operator ends it."""
    path: list[str | int] = [word]
    n = len(source)
    while True:
        k = _skip_blanks(source, j)
        if k < n and source[k] == "[":  # a string-literal index is a field name too
            q = _skip_blanks(source, k + 1)
            if q < n and source[q].isdigit():  # a list index (not 0x1, 1u, 1.0: they end the path)
                end = q
                while end < n and source[end].isdigit():
                    end += 1
                bracket = _skip_blanks(source, end)
                if bracket >= n or source[bracket] != "]":
                    return tuple(path), None
                path.append(int(source[q:end]))
                j = bracket + 1
                continue
            close = source.find(source[q], q + 1) if q < n and source[q] in "'\"" else -1
            bracket = _skip_blanks(source, close + 1) if close > 0 else n
            if close < 0 or "\\" in source[q + 1:close] or bracket >= n or source[bracket] != "]":
                return tuple(path), None
            path.append(source[q + 1:close])
            j = bracket + 1
            continue
        if k >= n or source[k] != ".":
            return tuple(path), None
        k = _skip_blanks(source, k + 1)
        end = k
        while end < n and (source[end].isalnum() or source[end] == "_"):
            end += 1
        after = _skip_blanks(source, end)
        if end == k:
            return tuple(path), None
        if after < n and source[after] == "(":
            return tuple(path), source[k:end]
        path.append(source[k:end])
        j = end


def shape(source: str) -> Shape:
    """One pass over the source: strings and comments are skipped (a comment is a blank, as it is
    to CEL: ``xs. // …\n map(`` is a macro); a ``.name(`` with ``name`` a
    comprehension macro opens a frame closed by its matching parenthesis. The body of each (its
    second argument) is wrapped in ``(__aob_tick() ? (…) : null)``. A ``matches(`` is a call of CEL's
    ``matches``, as a method or as a function, and becomes ``__aob_matches(`` (``_Budget.matches``,
    which takes the same two arguments in the same order either way): this is the one place that
    says which calls are matches calls. An identifier neither after a ``.`` nor called is a
    reference to a variable, with its field path."""
    inserts: list[tuple[int, int, str]] = []  # (where, how many characters it replaces, the text)
    references: list[tuple[str | int, ...]] = []
    reads: list[tuple[str | int, ...]] = []
    stack: list[dict[str, Any]] = []  # open brackets; macro frames carry their argument state
    bound: set[str] = set()
    macros = depth = concatenations = matches = 0
    previous = ""  # the last character of the token before, blanks and comments skipped
    i, n = 0, len(source)
    while i < n:
        ch = source[i]
        if ch in "'\"":
            i = _string_end(source, i)
            previous = ch
            continue
        if source.startswith("//", i):
            newline = source.find("\n", i)
            i = n if newline < 0 else newline
            continue
        if ch == "+":
            concatenations += 1
        elif ch.isalpha() or ch == "_":
            j = i
            while j < n and (source[j].isalnum() or source[j] == "_"):
                j += 1
            word = source[i:j]
            k = _skip_blanks(source, j)
            called, selected = k < n and source[k] == "(", previous == "."
            if word in MACROS and called and selected:
                macros += 1
                stack.append({"macro": True, "arg": 0, "guarded": False})
                depth = max(depth, sum(1 for f in stack if f["macro"]))
                i, previous = k + 1, "("
                continue
            if word == "matches" and called:
                matches += 1
                inserts.append((i, len(word), MATCHES))
            if stack and stack[-1]["macro"] and stack[-1]["arg"] == 0 and not selected and not called:
                bound.add(word)  # a macro's first argument: its own variable, comments or not around it
            if word not in KEYWORDS and not selected and not called:
                path, method = _field_path(source, word, j)
                reads.append(path)
                if method is None or method in COPYING_METHODS:
                    references.append(path)
            i, previous = j, word[-1]
            continue
        elif ch in "([{":
            stack.append({"macro": False})
        elif ch in ")]}":
            if stack:
                frame = stack.pop()
                if frame["macro"] and frame["guarded"]:
                    inserts.append((i, 0, ") : null)"))
        elif ch == "," and stack and stack[-1]["macro"]:
            frame = stack[-1]
            frame["arg"] += 1
            if frame["arg"] == 1:  # the body (or the filter of map's three-argument form)
                inserts.append((i + 1, 0, f" ({TICK}() ? ("))
                frame["guarded"] = True
            elif frame["guarded"] and frame["arg"] == 2:
                inserts.append((i, 0, ") : null)"))
                frame["guarded"] = False
        if ch not in BLANKS:
            previous = ch
        i += 1
    guarded, last = [], 0
    for pos, replaced, text in inserts:
        guarded.append(source[last:pos])
        guarded.append(text)
        last = pos + replaced
    guarded.append(source[last:])
    return Shape(macros, depth, concatenations, "".join(guarded), tuple(references), tuple(reads), matches,
                 frozenset(bound))


# --- compiling -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Compiled:
    source: str
    program: cel.Program  # the guarded program
    shape: Shape
    variables: frozenset[str]  # the names it reads: only these are converted to CEL values
    # what of each of them it reads (``read_tree``): only that is converted
    reads: dict[str, Any] = field(default_factory=dict, compare=False)


def limits() -> dict[str, int]:
    return {"max_source_bytes": settings.AOB_CEL_MAX_SOURCE_BYTES, "max_macros": settings.AOB_CEL_MAX_MACROS,
            "max_comprehension_depth": settings.AOB_CEL_MAX_COMPREHENSION_DEPTH}


def compile_expression(source: str) -> Compiled:
    """Check the source against the bounds, then compile it (cached per process). Raises
    ``ExpressionError`` whose ``rule`` is ``max_source_bytes``, ``max_macros``,
    ``max_comprehension_depth`` or ``syntax``."""
    bounds = limits()
    return _compile(source, bounds["max_source_bytes"], bounds["max_macros"], bounds["max_comprehension_depth"])


@functools.lru_cache(maxsize=4096)
def _compile(source: str, max_bytes: int, max_macros: int, max_depth: int) -> Compiled:
    size = len(source.encode())
    if size > max_bytes:
        raise ExpressionError(f"expression is {size} bytes; at most {max_bytes} are allowed", "max_source_bytes")
    expanded = expand_shorthand(source)
    found = shape(expanded)
    if found.macros > max_macros:
        raise ExpressionError(f"{found.macros} comprehension macros (all, exists, exists_one, map, filter); "
                              f"at most {max_macros} are allowed", "max_macros")
    if found.depth > max_depth:
        raise ExpressionError(f"comprehensions nest {found.depth} deep; at most {max_depth} levels are allowed",
                              "max_comprehension_depth")
    try:
        cel.compile(expanded)  # the author's source: its syntax errors point at what they wrote
        program = cel.compile(found.guarded)
    except (ValueError, RuntimeError) as exc:
        raise ExpressionError(str(exc).split("\n")[0]) from exc
    variables = frozenset(program.variables()) - {TICK, MATCHES}
    return Compiled(source, program, found, variables, read_tree(found.reads, variables))


def read_tree(paths: tuple[tuple[str | int, ...], ...], variables: frozenset[str]) -> dict[str, Any]:
    """What of each variable an expression reads, as a tree of field names and list indexes with
    ``None`` where a value is read whole: ``output.status == 200 && has(output.body.id)`` is
    ``{"output": {"status": None, "body": {"id": None}}}``. A path ends where the lexer stops
    following it (a call, an index that is not a string or decimal digits, an operator), so a value
    passed to ``size()``, a macro, ``in`` or ``==`` is whole, and so is a variable it finds no path
    for, and a value read both by field and by index (it cannot be a map and a list)."""
    tree: dict[Any, Any] = {}
    for path in paths:
        if path[0] not in variables:
            continue  # a word the lexer took for a reference that the program does not read
        node = tree
        for depth, name in enumerate(path):
            if depth == len(path) - 1:
                node[name] = None
            elif name in node and node[name] is None:
                break  # read whole already: its fields with it
            else:
                node = node.setdefault(name, {})
    for name in variables:
        tree.setdefault(name, None)
    todo = [tree]
    while todo:
        node = todo.pop()
        for name, below in node.items():
            if below is not None and len({type(key) for key in below}) > 1:
                node[name] = None
            elif below is not None:
                todo.append(below)
    return tree


def reads_union(one: dict[Any, Any] | None, other: dict[Any, Any] | None) -> dict[Any, Any] | None:
    """Two ``read_tree`` (sub)trees as one that reads what either reads, by ``read_tree``'s rules: a
    value read whole by either is whole, and so is one read by field in one and by index in the
    other."""
    if one is None or other is None:
        return None
    merged: dict[Any, Any] = dict(one)
    for name, below in other.items():
        merged[name] = reads_union(merged[name], below) if name in merged else below
    return merged if len({type(key) for key in merged}) <= 1 else None


def activation(compiled: Compiled, context: dict[str, Any]) -> dict[str, Any]:
    """The variables handed to the binding: each as much of its value as the expression reads
    (``compiled.reads``): maps copied along the paths only, lists read by index copied with null
    in every other place, each path's end whole. A key that is missing is missing here too, a list
    keeps its length, and a path through a value that is not a map (or a list, for an index) takes
    that value whole, so a missing key, an index past the end, ``has()`` and a field of a list or a
    string behave as over the whole context."""
    return prune(context, compiled.reads)


def prune(context: dict[str, Any], reads: dict[str, Any]) -> dict[str, Any]:
    """``context`` cut to ``reads`` (a ``read_tree``) as ``activation`` cuts it. Over a tree that
    reads at least what an expression's does (``reads_union``), the expression sees what it would
    see over the whole context: the coordinator reads only this of an output (``planner.output_reads``)."""
    variables: dict[str, Any] = {}
    todo: list[tuple[Any, dict[Any, Any], Any]] = [(context, reads, variables)]
    while todo:  # iteratively: a path is as long as the source allows
        source, branches, into = todo.pop()
        for name, below in branches.items():
            if isinstance(source, dict):
                if name not in source:
                    continue
            elif name >= len(source):  # a list, read by index
                continue
            value = source[name]
            if below is None:
                into[name] = value
            elif isinstance(value, dict) and type(next(iter(below))) is str:
                into[name] = {}
                todo.append((value, below, into[name]))
            elif isinstance(value, list) and type(next(iter(below))) is int:
                into[name] = [None] * len(value)
                todo.append((value, below, into[name]))
            else:
                into[name] = value
    return variables


def fields_read(source: str, variable: str) -> frozenset[str] | None:
    """The fields of ``variable`` that ``source`` reads (``nodes.a``, ``nodes["a-1"]``: ``a``,
    ``a-1``), or None when it reads the variable whole (``size(nodes)``, ``nodes[k]``,
    ``nodes.map(…)``, a ``nodes`` the lexer cannot follow): which node outputs a run's
    ``metadata.output`` needs. Raises ``ExpressionError`` as ``compile_expression``."""
    compiled = compile_expression(source)
    if variable not in compiled.reads:
        return frozenset()
    fields = compiled.reads[variable]
    return None if fields is None else frozenset(name for name in fields if isinstance(name, str))


# --- evaluating ----------------------------------------------------------------------------------


class _Budget:
    """One evaluation's deadline, from before its context is converted; also the tick a guarded
    program calls at every comprehension step, and the ``matches`` it calls instead of CEL's."""

    __slots__ = ("deadline", "error", "expired", "programs", "refused")

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.expired = False
        self.refused: str | None = None  # what was refused for the time it would take
        self.error: ExpressionError | None = None  # an error of ours raised inside the binding
        self.programs: dict[str, Any] = {}  # each pattern's program, charged once an evaluation

    def __call__(self) -> bool:
        if time.monotonic() > self.deadline:
            self.expired = True
            raise TimeoutError("evaluation budget exhausted")
        return True

    def refuse(self, what: str, weighed_ns: float) -> TimeoutError:
        left = max(0, int((self.deadline - time.monotonic()) * 1000))
        self.refused, self.expired = f"{what} is weighed at {int(weighed_ns / 1e6)} ms, more than the {left} ms left", True
        return TimeoutError(self.refused)

    def matches(self, text: Any, pattern: Any) -> bool:
        """CEL's ``matches`` (a search: the pattern may match anywhere in the text), run by RE2,
        the engine whose syntax the CEL spec names, with a bound the binding's own lacks: one call
        is the binding's work, Rust holding the GIL, and no tick runs inside it (its regex crate
        ran ``(?s:.){9000}!`` over 100 kB for 9 s, 1 MB for 92 s). RE2's time is linear in the
        text, at worst its program's size times the text's bytes (``MATCH_NS``): a call that
        could not end by the deadline is refused before it starts, the pattern's compiling
        included (``_regex``), and its weight (``regex``) counts against the deadline, looked at
        before and after."""
        if not isinstance(text, str) or not isinstance(pattern, str):
            self.error = ExpressionError(f"matches takes a string and a pattern string, not {type(text).__name__} "
                                         f"and {type(pattern).__name__}", "evaluation")
            raise ValueError(str(self.error))
        self()
        program = _regex(pattern, self)
        size = program.programsize
        what = f"matching {_shown(pattern)} (an RE2 program of {size} instructions) over "
        # the characters first: encoding a large text costs time too, and it has at least that many bytes
        if time.monotonic() + MATCH_NS * size * len(text) / 1e9 > self.deadline:
            raise self.refuse(f"{what}{len(text)} characters of text", MATCH_NS * size * len(text))
        data = text.encode()
        if time.monotonic() + MATCH_NS * size * len(data) / 1e9 > self.deadline:
            raise self.refuse(f"{what}{len(data)} bytes of text", MATCH_NS * size * len(data))
        found = program.search(data) is not None
        self()
        return found


# ``matches`` (``_Budget.matches``): RE2's time on this machine (5 December), the worst of 40 patterns
# built to be slow (nested optional repeats ``(?:a?){1000}x``, ``(?:[a-z]{0,30}){30}x``, ``(?s:.){1000}!``,
# word boundaries, case folding, Unicode classes) over 20-100 kB texts that match and that do not:
# 8.6 ns per program instruction and text byte (RE2's DFA gives up on them within its memory and
# its NFA steps every instruction at every byte); ordinary patterns take 0.01-0.2 ns (the DFA).
# Weighed at about 1.5 times that, for a loaded machine: in the default second, a 15-instruction
# pattern (``(?i)hello``, an e-mail shape) may search ~5 MB, ``\p{L}+`` (1,201 instructions) ~70 kB.
MATCH_NS = 12
# Compiling: RE2 parses a Unicode class escape in up to ~30 µs a pattern byte (``\pL``, ``(?i)[^\pL]``,
# 20-47 µs here; literals and ``.`` 0.1-1 µs), then compiles until its program passes its ``max_mem``
# (a refusal at most 6-8 ms here under ``REGEX_MAX_MEM``; 45-100 ms under ``FORM_REGEX_MAX_MEM``,
# 7 December, a loaded machine). Weighed at about 1.5 times that, per MiB of ``max_mem``.
COMPILE_NS = 12_000_000
COMPILE_BYTE_NS = 45_000
# What a compiled program weighs, besides its bytes: 260-660 ns per instruction of ``programsize``
# here (7 December: ``\p{L}{50}``, 59,804 instructions, 15-37 ms; ``^[\p{L} .'-]{1,100}$``, 120,001,
# 80 ms; ``(?i)[^\pL]`` 1,203 in 0.5 ms). Weighed at about 1.5 times the quiet machine's.
COMPILE_INSTRUCTION_NS = 600
# RE2's memory for one of CEL's patterns, program and DFA caches: a program of up to ~60,000
# instructions (``(?s:.){1000}`` is 7,005; three of them are too large), which is all the deadline
# lets search more than ~4 kB of text anyway.
REGEX_MAX_MEM = 1 << 20
# An approval form's: RE2's default, which forms compiled with until 7 December. Under 1 MiB an
# ordinary name pattern, ``^[\p{L} .'-]{1,100}$`` (120,001 instructions), was refused, and every
# stored form holding one failed its decisions. A form's pattern matches one answer's string, read
# by the DFA (``_COSTS``); what bounds its compiles is the form's budget: that name pattern weighs
# 18,226 of the default 50,000 steps, an e-mail or phone pattern 250-550, and a program past
# ~330,000 instructions (``\p{L}{300}1``, 0.2 s) more than all of them.
FORM_REGEX_MAX_MEM = 8 << 20
# Compiled patterns (and the reasons RE2 refused others) kept per process, most recently used: at
# most ``REGEX_CACHE`` of them and ``REGEX_CACHE_BYTES`` of RE2 memory, each program weighed at the
# ``max_mem`` it was compiled under (its DFA caches grow to it as it runs): 64 CEL patterns, or 8
# of a form's. Kept here only: ``re2.compile``'s own cache of 128 whatever their size would hold
# 1 GiB of 8 MiB programs, so they are built by ``re2._Regexp`` (the class ``re2.compile``
# returns, google-re2 pinned in requirements.txt).
REGEX_CACHE = 64
REGEX_CACHE_BYTES = 64 << 20

_regexes: OrderedDict[tuple[int, str], tuple[Any, int, int]] = OrderedDict()
_regexes_held = 0  # the sum of the kept programs' ``max_mem``
_regexes_lock = threading.Lock()


def _regex_options(max_mem: int) -> re2.Options:
    options = re2.Options()
    options.log_errors = False
    options.max_mem = max_mem
    options.never_capture = True  # ``matches`` answers a boolean: no group is ever read
    return options


def _keep(key: tuple[int, str], found: tuple[Any, int, int]) -> None:
    global _regexes_held
    with _regexes_lock:
        if key in _regexes:  # compiled by two threads at once: one kept
            return
        _regexes[key] = found
        _regexes_held += found[2]
        while len(_regexes) > REGEX_CACHE or _regexes_held > REGEX_CACHE_BYTES:
            _regexes_held -= _regexes.popitem(last=False)[1][2]


def _shown(text: str, limit: int = 60) -> str:
    """``text`` quoted for a message, clipped, its control characters escaped: a pattern from data
    may hold a NUL or a terminal's escape, and messages reach logs, events and answers."""
    clipped = text if len(text) <= limit else text[:limit] + "…"
    return repr(clipped)


class RegexRefused(ValueError):
    """A pattern RE2 does not accept: its syntax, or a program past its ``max_mem``."""

    def __init__(self, pattern: str, reason: str) -> None:
        super().__init__(f"the pattern {_shown(pattern)} is not one RE2 accepts: {_shown(reason, 200)[1:-1]}")
        self.pattern, self.reason = pattern, reason


def regex(pattern: str, admit: Callable[[str, int], None], spent: Callable[[str, int], object],
          max_mem: int = REGEX_MAX_MEM) -> Any:
    """The RE2 program for ``pattern``: the one rule for every pattern a user writes (CEL's
    ``matches`` within ``REGEX_MAX_MEM``, an approval form's ``pattern`` and ``patternProperties``
    within ``FORM_REGEX_MAX_MEM``), each compiled within ``max_mem`` and kept (``REGEX_CACHE``,
    ``REGEX_CACHE_BYTES``; refusals too). A compile is first weighed from the pattern's bytes,
    ``admit(what, weighed_ns)`` raising to refuse it uncompiled (``COMPILE_NS``, ``COMPILE_BYTE_NS``).
    Then every use is charged ``spent(what, weight_ns)``, the same weight whether this process
    compiled the pattern just now or before: its bytes and its program's instructions
    (``COMPILE_INSTRUCTION_NS``), a refusal ``COMPILE_NS`` per MiB of ``max_mem`` and its bytes (what
    compiling to the limit may take). What ``admit`` looks at is the least a compile takes, not its
    class's most: a form's last patterns would be refused behind two name patterns, so a budget's
    last compile may pass it by one program's time (0.1-0.4 s under ``FORM_REGEX_MAX_MEM``). Charging
    the compile's measured time, and only on a miss of the cache every user shares, made one form
    refused on its first save and valid on its second, valid at save and refused at its decision,
    and refused on a slow machine what a fast one accepted. Raises ``RegexRefused``."""
    key = (max_mem, pattern)
    with _regexes_lock:
        found = _regexes.get(key)
        if found is not None:
            _regexes.move_to_end(key)
    size = len(pattern.encode())
    if found is None:
        admit(f"compiling the pattern {_shown(pattern)} ({size} bytes)", COMPILE_NS + COMPILE_BYTE_NS * size)
        try:
            program = re2._Regexp(pattern, _regex_options(max_mem))
            found = (program, COMPILE_BYTE_NS * size + COMPILE_INSTRUCTION_NS * program.programsize, max_mem)
        except re2.error as exc:
            reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
            if "too large" in reason:
                reason += f" (its RE2 program would need more than {max_mem >> 10} KiB)"
            found = (reason, COMPILE_NS * max(1, max_mem >> 20) + COMPILE_BYTE_NS * size, 0)
        _keep(key, found)
    program, weight, _ = found
    if isinstance(program, str):
        spent(f"the pattern {_shown(pattern)} ({size} bytes, refused by RE2)", weight)
        # a new error each time: a cached one, raised, would keep its raiser's frames (and the data
        # they hold) alive with it, and is shared by every thread that reads the cache
        raise RegexRefused(pattern, program)
    spent(f"the pattern {_shown(pattern)} ({size} bytes, an RE2 program of {program.programsize} instructions)",
          weight)
    return program


def _regex(pattern: str, budget: _Budget) -> Any:
    """``matches``'s program, charged once an evaluation: a compile that could not end by the
    deadline is not started, and the pattern's weight (``regex``) is taken from what is left."""
    known = budget.programs.get(pattern)
    if known is not None:
        return known

    def admit(what: str, weighed_ns: int) -> None:
        if time.monotonic() + weighed_ns / 1e9 > budget.deadline:
            raise budget.refuse(what, weighed_ns)

    def spent(what: str, weight_ns: int) -> None:
        admit(what, weight_ns)
        budget.deadline -= weight_ns / 1e9

    try:
        known = budget.programs[pattern] = regex(pattern, admit, spent)
    except RegexRefused as exc:
        budget.error = ExpressionError(f"matches: {exc}", "regex")
        raise ValueError(str(budget.error)) from None
    return known


# What converting a value to CEL costs the binding, in ns: Rust holding the GIL, before any tick can
# run. Measured here (4 December, conversion and the program's copy of it): a string, a list, a map
# or a map's key 1.3-2 µs each (2 µs in a 10 MB output of small objects), a float 0.9 µs, an
# integer 0.15 µs, a boolean or null less, a character ~1 ns. Weighed at about 1.5 times that, for a
# loaded machine: what could not be converted in what is left of the deadline is not started.
CONVERT_NS = 3_000  # a string, a float, a list, a map, and each key of a map
CONVERT_SCALAR_NS = 300  # an integer, a boolean, null
CONVERT_CLOCK_EVERY = 1024  # values weighed between two looks at the clock (the walk's time counts)


def _refused(budget: _Budget) -> TimeoutError:
    budget.expired = True
    return TimeoutError("converting the context would pass the deadline")


def _admit(variables: dict[str, Any], budget: _Budget) -> None:
    """Weigh converting ``variables`` (``CONVERT_NS``) while walking them, and raise
    ``TimeoutError`` as soon as it could not end by the deadline, the walk's own time counted:
    the walk stops there, so it costs at most what the deadline allows, whatever the size of the
    value."""
    left = (budget.deadline - time.monotonic()) * 1e9
    cost, clock = CONVERT_NS, CONVERT_CLOCK_EVERY
    todo: list[Any] = [variables]  # weighed as a map: the binding's context is one
    while todo:
        item = todo.pop()
        children = item.values() if isinstance(item, dict) else item
        # each child weighs at least a scalar: a list too long is refused before it is walked
        if cost + CONVERT_SCALAR_NS * len(children) > left:
            raise _refused(budget)
        for child in children:
            kind = type(child)
            if kind is str:
                cost += CONVERT_NS + len(child)
            elif kind is int or kind is bool or child is None:
                cost += CONVERT_SCALAR_NS
            elif kind is dict or isinstance(child, dict):
                cost += CONVERT_NS * (1 + len(child))  # the map and its keys
                todo.append(child)
            elif kind is list or isinstance(child, list | tuple):
                cost += CONVERT_NS
                todo.append(child)
            elif isinstance(child, str | bytes):
                cost += CONVERT_NS + len(child)
            elif isinstance(child, int):
                cost += CONVERT_SCALAR_NS
            else:  # a float, or what the binding makes of anything else
                cost += CONVERT_NS
            clock -= 1
            if not clock:
                clock, left = CONVERT_CLOCK_EVERY, (budget.deadline - time.monotonic()) * 1e9
            if cost > left:
                raise _refused(budget)


def largest_value(value: Any, stop: int) -> int:
    """The size of the largest string (in characters) or list or map (in items) in ``value``,
    walked iteratively, stopping as soon as one reaches ``stop``."""
    largest = 0
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, str | bytes):
            largest = max(largest, len(item))
        elif isinstance(item, dict):
            largest = max(largest, len(item))
            todo.extend(item.values())
        elif isinstance(item, list | tuple):
            largest = max(largest, len(item))
            todo.extend(item)
        if largest >= stop:
            break
    return largest


def _check_concatenation(compiled: Compiled, context: dict[str, Any]) -> None:
    k = compiled.shape.concatenations
    if k <= CHEAP_CONCATENATIONS:
        return
    # k chained ``+`` over values of at most S copy at most S·k(k+1)/2 in all.
    budget = settings.AOB_CEL_MAX_CONCAT_BYTES
    stop = budget * 2 // (k * (k + 1)) + 1
    if largest_value(context, stop) >= stop:
        raise ExpressionError(f"{k} concatenations over values this large could copy more than {budget} bytes",
                              "max_concat_bytes")


def weight(value: Any, stop: int) -> int:
    """About the bytes ``value`` takes as CEL and Python values: its strings' characters and 8 per
    number, list item or map entry; walked iteratively, stopping once it reaches ``stop``."""
    total = 0
    todo = [value]
    while todo and total < stop:
        item = todo.pop()
        if isinstance(item, str | bytes):
            total += len(item)
        elif isinstance(item, dict):
            total += 8 * len(item)
            todo.extend(item.keys())
            todo.extend(item.values())
        elif isinstance(item, list | tuple):
            total += 8 * len(item)
            todo.extend(item)
        else:
            total += 8
    return total


def _check_copying(compiled: Compiled, variables: dict[str, Any]) -> None:
    """Outside a comprehension (which the deadline stops) an expression builds its result from
    literals and what its references read, so it holds at most the sum of those: a list of 400
    references to one 500 kB input is 200 MB. Each reference is weighed at the value its field
    path reaches (an index or a call is weighed at what it applies to, never less)."""
    references = compiled.shape.references
    if len(references) <= CHEAP_REFERENCES:
        return
    budget = settings.AOB_CEL_MAX_COPY_BYTES
    weighed: dict[tuple[str | int, ...], int] = {}
    total = 0
    for path in references:
        if path not in weighed:
            value = variables.get(str(path[0]))  # a path starts with a variable's name
            for name in path[1:]:
                if not isinstance(value, dict) or name not in value:
                    break
                value = value[name]
            weighed[path] = weight(value, budget - total + 1) if path[0] in variables else 0
        total += weighed[path]
        if total > budget:
            raise ExpressionError(f"its {len(references)} references read more than {budget} bytes in all "
                                  "(AOB_CEL_MAX_COPY_BYTES)", "max_copy_bytes")


# A tighter deadline for every evaluation in this context (``capped``): a decision evaluating a pure
# node gives it what is left of its budget, however the node's own function calls ``evaluate``.
@dataclass
class Cap:
    ms: float
    stopped: bool = False  # an evaluation inside stopped because of this cap (not its own deadline)


_CAP: ContextVar[Cap | None] = ContextVar("aob_cel_cap", default=None)


@contextlib.contextmanager
def capped(ms: float) -> Iterator[Cap]:
    """Evaluations inside stop after ``ms`` at most (an ``ExpressionError`` with rule ``timeout``).
    The ``Cap`` it yields says whether one stopped because of it: a conversion weighed past it is
    refused at once, before the cap's time has run out, and a decision gives such a pure node to
    a worker, under the node's own limits, as one that ran into the cap."""
    cap = Cap(ms)
    token = _CAP.set(cap)
    try:
        yield cap
    finally:
        _CAP.reset(token)


def evaluate(source: str, context: dict[str, Any], *, timeout_ms: int | None = None,
             setting: str = "AOB_CEL_TIMEOUT_MS") -> Any:
    """Evaluate under the deadline (``AOB_CEL_TIMEOUT_MS``, or less when asked, ``timeout_ms`` from
    the operator's ``setting``, or ``capped``). Any failure, the budget included, is an
    ``ExpressionError`` with a message a person can act on."""
    compiled = compile_expression(source)
    capping = _CAP.get()
    cap = None if capping is None else capping.ms
    ceiling = settings.AOB_CEL_TIMEOUT_MS if cap is None else min(settings.AOB_CEL_TIMEOUT_MS, cap)
    limit = min(ceiling, timeout_ms or ceiling)

    def stopped(converting: bool = False, refused: str | None = None) -> ExpressionError:
        if capping is not None and limit >= capping.ms:
            capping.stopped = True
        if cap is not None and cap < settings.AOB_CEL_TIMEOUT_MS and cap <= (timeout_ms or cap):
            why = "what was left of the time this decision's expressions share, AOB_CEL_TIMEOUT_MS"
        else:
            why = setting if timeout_ms and timeout_ms < settings.AOB_CEL_TIMEOUT_MS else "AOB_CEL_TIMEOUT_MS"
        if converting:
            return ExpressionError(f"evaluation stopped: what it reads is too large to convert to CEL values "
                                   f"within {int(limit)} ms ({why}); read fewer fields of it", "timeout")
        if refused:
            return ExpressionError(f"evaluation stopped: {refused} of its {int(limit)} ms ({why}); match a shorter "
                                   "text or a simpler pattern", "timeout")
        return ExpressionError(f"evaluation stopped after {int(limit)} ms ({why})", "timeout")

    if limit <= 0:
        raise stopped()  # nothing left of the time it shares: it does not start
    # The deadline runs from here: converting to CEL values is the binding's work before any tick,
    # so only what the expression reads is handed to it (a rule reading ``output.status`` converts
    # one number of a 10 MB output), and that is weighed first and refused when it cannot end in time.
    budget = _Budget(limit / 1000)
    variables = activation(compiled, context)
    try:
        _admit(variables, budget)
    except TimeoutError:
        raise stopped(converting=True) from None
    _check_concatenation(compiled, variables)
    _check_copying(compiled, variables)
    try:
        # in a ``cel.Context``, several times faster than a dict; no tick when nothing loops
        functions: dict[str, Any] = {TICK: budget} if compiled.shape.macros else {}
        if compiled.shape.matches:
            functions[MATCHES] = budget.matches
        converted = cel.Context(variables, functions or None)
        budget()  # a conversion that took longer than it was weighed at stops as a tick would
        return compiled.program.execute(converted)
    except TimeoutError:
        raise stopped() from None
    except (KeyError, ValueError, RuntimeError, TypeError, ZeroDivisionError, OverflowError, IndexError) as exc:
        if "SoftTimeLimitExceeded" in str(exc):
            raise SoftTimeLimitExceeded() from exc  # the task's own limit, raised in our tick: not the expression's
        if budget.error is not None:
            raise budget.error from None
        if budget.expired:
            raise stopped(refused=budget.refused) from None
        raise ExpressionError(f"{type(exc).__name__}: {exc}", "evaluation") from exc


def _cel_type(value: Any) -> str:
    """The CEL name of an evaluated value's type, as a person wrote it (``list``, ``string``)."""
    names = ((type(None), "null"), (bool, "bool"), (int, "int"), (float, "double"), (str, "string"),
             (bytes, "bytes"), (list, "list"), (dict, "map"))
    return next((name for kind, name in names if isinstance(value, kind)), type(value).__name__)


def evaluate_condition(source: str, context: dict[str, Any]) -> bool:
    """A condition holds only when it evaluates to ``true``. Errors raise ``ExpressionError``:
    the coordinator counts them as false and says so in a ``condition_error`` event. So does a
    value that is not a boolean (``$.items`` meant as "non-empty", ``'yes'``, ``1``): it is never
    truthy, and was once skipped as a dead path without a word (red team 11)."""
    value = evaluate(source, context)
    if not isinstance(value, bool):
        raise ExpressionError(f"the condition gave {_cel_type(value)}, not a boolean: write the comparison "
                              "meant (size($.items) > 0, $.answer == 'yes')", "evaluation")
    return value
