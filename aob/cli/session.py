"""What every command shares: the API URL, the token, the output mode, and small input readers."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from aob import jsontext

from . import config
from .client import ApiClient
from .output import Failure, Output, echo


@dataclass
class Session:
    api_url: str
    output: Output
    token_override: str | None = None
    allow_http: bool = False
    _client: ApiClient | None = field(default=None, repr=False)

    @property
    def token(self) -> str | None:
        if self.token_override:
            return self.token_override
        stored = config.credentials_get(api_url=self.api_url)
        return stored["token"] if stored else None

    @property
    def client(self) -> ApiClient:
        if self._client is None:
            self._client = ApiClient(self.api_url, self.token, allow_http=self.allow_http)
        return self._client

    @property
    def answered(self) -> bool:
        """Whether the server's JSON has been read by this command."""
        return self._client is not None and self._client.answered

    def login_client(self) -> ApiClient:
        """A client without a token, for ``auth/token``: what it sends is a password."""
        return ApiClient(self.api_url, sends="password", allow_http=self.allow_http)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


pass_session = click.make_pass_decorator(Session)


def warn_if_typed(ctx: click.Context, name: str, instead: str) -> None:
    """A secret given as an option is in every local account's `ps` and in the shell's history."""
    if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE:
        echo(f"warning: --{name} on the command line is visible to every account on this machine (ps) "
                   f"and kept in your shell's history; use {instead}", err=True)


def parse_json(text: str) -> Any:
    """JSON as the API reads it (``aob.jsontext``): Python's parser also takes ``NaN``, ``Infinity``
    and ``1e999``, which no request can carry (httpx refused to send them, with a traceback). A
    document nested past Python's recursion limit is refused as not JSON, as the API refuses one
    nested past its own."""
    try:
        return jsontext.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def read_json_file(path: str | Path, what: str = "file") -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise Failure(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:  # a file saved as UTF-16, or not text at all
        raise Failure(f"{path} is not UTF-8 text (byte {exc.start}): save it as UTF-8") from None
    try:
        return parse_json(text)
    except ValueError as exc:
        raise Failure(f"{path} is not valid JSON: {exc}") from None


def names_a_file(value: str) -> bool:
    """Whether ``value`` is the path of a file. A value the system refuses as a path (inline JSON
    past its 255-byte name limit: ENAMETOOLONG) is not one; ``is_file`` raises for it."""
    try:
        return Path(value).is_file()
    except OSError:
        return False


def json_file_or_text(value: str, what: str) -> Any:
    """``--inputs`` and friends: a path to a JSON file, or the JSON itself."""
    if names_a_file(value):
        return read_json_file(value, what)
    try:
        return parse_json(value)
    except ValueError as exc:
        raise Failure(f"{what} is neither a file nor valid JSON: {exc}") from None


def shown_version(value: Any) -> int | None:
    """The version a file holds when it is what `aob -o json workflow show TAG [--version N]` printed
    (the definition with its ``version``, or ``seq`` for an older one); None for a bare definition."""
    if not (isinstance(value, dict) and isinstance(value.get("definition"), dict) and isinstance(value.get("tag"), str)):
        return None
    seq = value.get("version", value.get("seq"))
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


def definition_of(value: Any, what: str) -> dict[str, Any]:
    """A workflow file's definition: the file itself, or the ``definition`` of what `aob -o json
    workflow show` printed (which `workflow create` takes, so validating or running it does too)."""
    value = json_object(value, what)
    return value["definition"] if shown_version(value) is not None else value


IDEMPOTENCY_KEY_MAX = 255  # the server's MAX_LENGTH (pinned in tests/cli/test_server_words.py)


def idempotency_key_check(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """The server's rule for an ``Idempotency-Key``, judged before anything is sent: an empty one
    (an unset variable) became a new random key, so a script's retry started a second run. The
    server strips the header as HTTP does, so a key of spaces is empty here too."""
    if value is None:
        return None
    key = value.strip()
    if not (1 <= len(key) <= IDEMPOTENCY_KEY_MAX and key.isascii() and key.isprintable()):
        raise click.BadParameter(f"an idempotency key is 1 to {IDEMPOTENCY_KEY_MAX} printable ASCII characters")
    return key


def finite(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """``FloatRange`` takes ``nan`` and ``inf``, which no JSON body carries."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number")
    return value


def json_object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Failure(f"{what} must be a JSON object")
    return value


def operations_from(value: Any, what: str) -> tuple[list[Any], str | None]:
    """A patch file is a list of RFC 6902 operations, or ``{"operations": [...], "description": ...}``."""
    if isinstance(value, dict) and "operations" in value:
        return value["operations"], value.get("description")
    if isinstance(value, list):
        return value, None
    raise Failure(f"{what} must be a list of RFC 6902 operations or an object with \"operations\"")
