"""``$secrets.NAME`` in node config: resolved only inside an executor, at send time, and masked on
the way out.

The engine resolves a node's config (``$inputs``, ``$nodes``, ``${…}``) before its executor runs and
stores that as the node's input; it leaves secret references as they are, so the stored input, the
events and the LLM prompt carry ``$secrets.NAME``, never the value. An executor that sends a request
asks a ``SecretBox`` to render the values that need secrets, from the config as the author wrote it
(``ctx.raw_config``): the text around a reference is resolved as usual and the reference is replaced
by the value. Only the author's text can name a secret: a run input or an upstream output that
happens to contain ``$secrets.X`` is sent as that literal text.

Whatever the executor keeps (its output, an error message) goes through ``SecretBox.mask`` first: a
response echoing a secret is stored with ``[secret:NAME]`` in its place (the value as sent, inside a
JSON string, and URL-encoded as the common encoders write it).

A secret has up to some sixty forms, and a node may send every secret of its owner: the forms go in
one Aho-Corasick automaton (``ahocorasick-rs``, leftmost-longest), made once per box, and each string is read once,
whatever their number. Searching each string for each form, made again at every mask (each field of
every record logged meanwhile is one), took 10 s of a worker to mask a 1.1 MiB answer for 200
secrets. What the forms weigh is bounded by the owner's secrets' total size (``vault.services``).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import re
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple
from urllib.parse import quote, quote_plus

from ahocorasick_rs import AhoCorasick, Implementation, MatchKind

from .names import NAME

REFERENCE = re.compile(rf"\$\{{\s*\$?secrets\.({NAME})\s*\}}|\$secrets\.({NAME})")


def has_reference(value: Any) -> bool:
    if isinstance(value, str):
        return "secrets." in value and REFERENCE.search(value) is not None
    if isinstance(value, dict):
        return any(has_reference(v) for v in value.values())
    if isinstance(value, list):
        return any(has_reference(v) for v in value)
    return False


def referenced_names(value: Any) -> set[str]:
    if isinstance(value, str):
        return {a or b for a, b in REFERENCE.findall(value)}
    if isinstance(value, dict):
        return set().union(*(referenced_names(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(referenced_names(v) for v in value)) if value else set()
    return set()


class SecretBox:
    """The secrets of one owner, for one executor call: loaded when first needed, remembered for masking."""

    def __init__(self, owner_id: int, *, loader: Callable[[int, set[str]], dict[str, str]] | None = None) -> None:
        self.owner_id = owner_id
        self.used: dict[str, str] = {}
        self._loader = loader
        self._matcher: Matcher | None = None
        self._matched = 0  # how many of ``used`` the matcher holds (secrets are only ever added)

    def _load(self, names: set[str]) -> None:
        missing = names - set(self.used)
        if not missing:
            return
        if self._loader is None:
            from vault.services import secret_values

            self.used.update(secret_values(owner_id=self.owner_id, names=missing))
        else:
            self.used.update(self._loader(self.owner_id, missing))

    def render(self, raw: Any, resolved: Any, resolve_text: Callable[[str], Any]) -> Any:
        """``resolved`` (the engine's resolution of ``raw``), with every string the author wrote with
        a secret reference rendered again from ``raw``: text around a reference through
        ``resolve_text``, the reference as the secret's value."""
        if isinstance(raw, str):
            if "secrets." not in raw or not REFERENCE.search(raw):
                return resolved
            self._load(referenced_names(raw))
            return self._render_text(raw, resolve_text)
        if isinstance(raw, dict) and isinstance(resolved, dict):
            return {k: self.render(raw.get(k), v, resolve_text) if k in raw else v for k, v in resolved.items()}
        if isinstance(raw, list) and isinstance(resolved, list) and len(raw) == len(resolved):
            return [self.render(r, v, resolve_text) for r, v in zip(raw, resolved, strict=True)]
        return resolved

    def _render_text(self, raw: str, resolve_text: Callable[[str], Any]) -> str:
        out: list[str] = []
        last = 0
        for match in REFERENCE.finditer(raw):
            if match.start() > last:
                out.append(_text(resolve_text(raw[last:match.start()])))
            out.append(self.used[match.group(1) or match.group(2)])
            last = match.end()
        if last < len(raw):
            out.append(_text(resolve_text(raw[last:])))
        return "".join(out)

    def _automaton(self) -> Matcher | None:
        """Every form a secret this box handed out may take in text (as it is, URL-encoded as the
        common encoders write it, inside a JSON string, with or without its non-ASCII characters
        escaped: httpx sends them as they are), in one automaton, and the label that replaces each;
        None when there is none. Made again only when the box has handed out another secret."""
        if self._matched != len(self.used):
            labels = {form: f"[secret:{name}]" for name, secret in self.used.items() if secret
                      for form in {secret, *_url_forms(secret), *_text_forms(secret)}}
            forms = list(labels)
            numbers = {form: f"[secret:{name}]" for name, secret in self.used.items() if (form := _number_form(secret))}
            self._matcher = (Matcher(AhoCorasick(forms, matchkind=MatchKind.LeftmostLongest, implementation=CONTIGUOUS),
                                     [labels[f] for f in forms], numbers) if forms else None)
            self._matched = len(self.used)
        return self._matcher

    def mask(self, value: Any) -> Any:
        """``value`` with every secret this box handed out replaced by ``[secret:NAME]``."""
        matcher = self._automaton() if self.used else None
        return value if matcher is None else _mask(value, matcher)

    def carried(self, texts: list[str]) -> list[str]:
        """The names of the secrets this box handed out that appear, in any form, in ``texts``."""
        matcher = self._automaton() if self.used else None
        if matcher is None:
            return []
        return sorted({matcher.labels[i][8:-1] for text in texts
                       for i, _, _ in matcher.automaton.find_matches_as_indexes(text)})

    def masked(self, exc: Any) -> Any:
        """An AobError (raised while secrets were in play) with its message and details masked."""
        exc.message = self.mask(exc.message)
        exc.args = (exc.message,)
        exc.extra = self.mask(exc.extra)
        return exc

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """While in this block, log records of this thread have this box's values masked too
        (``vault.logs.MaskSecrets``): a library that logs a URL or a header cannot leak one."""
        token = _ACTIVE.set(self)
        try:
            yield
        finally:
            _ACTIVE.reset(token)


class Matcher(NamedTuple):
    """Every form of the secrets in use in text, each one's label, and the numbers a digit secret
    is answered as (``_number_form``), each with its label."""

    automaton: AhoCorasick
    labels: list[str]
    numbers: dict[str, str]


# The crate picks a DFA for a few patterns, which took 200 s to build for four secrets of 16,000 "é"
# (long periodic forms); its NFA builds in milliseconds and still reads a text once.
CONTIGUOUS = Implementation.ContiguousNFA

_ACTIVE: contextvars.ContextVar[SecretBox | None] = contextvars.ContextVar("aob_secret_box", default=None)


def active_box() -> SecretBox | None:
    return _ACTIVE.get()


# What URL encoders leave as it is besides letters, digits and "-_.": PHP's urlencode (nothing),
# Java's URLEncoder ("*"), Python's quote(safe="") and Go's QueryEscape ("~"), Python's quote() ("/"),
# JavaScript's encodeURIComponent and encodeURI, Go's PathEscape. A remote that puts the token it was
# sent in a link (a redirect's Location, a ``next`` URL) writes it with its own library: before 5
# December only Python's two forms were masked, and a token in any other was kept as it came.
URL_KEPT = ("", "*", "~", "/~", "!'()*~", "$&+,/:;=@~", "!#$&'()*+,/:;=?@~")
_HEX = re.compile(r"%[0-9A-F]{2}")


def _url_forms(secret: str) -> set[str]:
    """``secret`` as each of those encoders writes it, a space as ``%20`` or ``+``, in upper or
    lower hex (.NET writes ``%2f``); and each of those encoded once more, its ``%`` as ``%25``: a
    remote behind a login puts the URL it was asked for, query and all, in a link (``302
    /login?next=…``, Django's ``login_required``) the client follows. Kept as it came before 7
    December, a key sent in a query was in the node's output ``url`` for its readers; encoded a
    third time (the single sign-on's ``service=`` one hop on), it went on to that other origin, the
    redirect check (``_keep_secrets_home``) reading a Location unquoted once."""
    forms = set()
    for kept in URL_KEPT:
        for encode in (quote, quote_plus):
            form = encode(secret, safe=kept, errors="surrogatepass")
            if "~" not in kept:  # Python keeps "~" whatever it is told (RFC 3986 unreserved)
                form = form.replace("~", "%7E")
            forms |= {form, _HEX.sub(lambda hexed: hexed.group().lower(), form)}
    return forms | {form.replace("%", "%25") for form in forms if "%" in form}


# HTML's escapes of the characters it escapes, with the quotes as each common escaper writes the
# pair: none (Python's ``quote=False``), Python's html.escape and Django, PHP 8.1's htmlspecialchars,
# older PHP and Java's escapeHtml4 (``'`` left as it is), PHP's ENT_HTML5, Jinja and Go, Ruby, Rails,
# lodash and .NET. And the JSON string escapes other encoders write: PHP's "\/", Go's HTML-safe
# "\u0026" "\u003c" "\u003e" and line separators, Java's upper-case hex. A login page that fills its
# form in again, or an error page quoting what it was sent, wrote the secret in one of them, kept
# as it came (a red-team helper's find).
_HTML_QUOTES = (('"', "'"), ("&quot;", "&#x27;"), ("&quot;", "&#039;"), ("&quot;", "'"), ("&quot;", "&apos;"),
                ("&#34;", "&#39;"), ("&quot;", "&#39;"))
_GO_JSON = {"&": "\\u0026", "<": "\\u003c", ">": "\\u003e", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_JSON_HEX = re.compile(r"\\u[0-9a-f]{4}")


def _text_forms(secret: str) -> set[str]:
    """``secret`` inside a JSON string as the common encoders write it, and HTML-escaped as the
    common escapers write it (``_HTML_QUOTES``)."""
    raw, ascii_only = json.dumps(secret, ensure_ascii=False)[1:-1], json.dumps(secret)[1:-1]
    forms = {raw, ascii_only, raw.replace("/", "\\/"), ascii_only.replace("/", "\\/"),
             "".join(_GO_JSON.get(c, c) for c in raw),
             _JSON_HEX.sub(lambda hexed: hexed.group()[:2] + hexed.group()[2:].upper(), ascii_only)}
    html = secret.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    forms |= {html.replace('"', double).replace("'", single) for double, single in _HTML_QUOTES}
    return forms


def _number_form(secret: str) -> str | None:
    """The number a secret of decimal digits with leading zeros is answered as by a remote that
    read it as one (``00481516`` as ``481516``), of six digits or more: masked where a number is
    (``_mask``), never in text; a shorter one would take the node's own figures too (its
    ``duration_ms``), made text."""
    if secret.isascii() and secret.isdigit() and secret.startswith("0"):
        number = str(int(secret))
        return number if len(number) >= NUMBER_FORM_MIN_DIGITS else None
    return None


NUMBER_FORM_MIN_DIGITS = 6


def _mask(value: Any, matcher: Matcher) -> Any:
    if isinstance(value, str):
        return _mask_text(value, matcher)
    if isinstance(value, dict):
        return {_mask(k, matcher): _mask(v, matcher) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v, matcher) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        # a remote that parsed the JSON text a PIN was sent in answers it as a number: masked as
        # its text would be, so the output (and its content-addressed artifact) never holds it
        text = json.dumps(value)
        if text in matcher.numbers:
            return matcher.numbers[text]
        masked = _mask_text(text, matcher)
        return value if masked == text else masked
    return value


def _mask_text(text: str, matcher: Matcher) -> str:
    """``text`` read once, left to right, each form found replaced by its label: the longest that
    starts at the leftmost place, then on after it."""
    automaton, labels, _ = matcher
    found = automaton.find_matches_as_indexes(text)
    if not found:
        return text
    parts: list[str] = []
    last = 0
    for index, start, end in found:
        parts += (text[last:start], labels[index])
        last = end
    parts.append(text[last:])
    return "".join(parts)


def _text(value: Any) -> str:
    """As the engine interpolates a value into a template (``workflows.definition.references``)."""
    if isinstance(value, str):
        return value
    return "" if value is None else json.dumps(value, separators=(",", ":"), ensure_ascii=False)
