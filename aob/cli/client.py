"""An httpx client for the REST API: token auth, every error turned into the API's own message, and a
rate limit's refusal waited out."""

from __future__ import annotations

import ipaddress
import time
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from .output import Failure, echo

USER_AGENT = "aob-cli/0.1"
RATE_WAITS = 5  # times one request is sent again after a rate limit's 429, each after the wait it names
RATE_WAIT_MAX_S = 60.0  # the longest of those waits (a window is a minute)


class ApiError(Failure):
    """An error answer (``{"error", "message", "details"}``) or no answer at all; exits 1."""

    def __init__(self, message: str, *, code: str = "error", status: int | None = None,
                 details: dict[str, Any] | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.details = details or {}
        self.retry_after = retry_after

    def show(self, file: Any = None) -> None:
        super().show(file)
        problems = [p for p in self.details.get("errors") or [] if isinstance(p, dict)]
        if len(problems) > 1:  # the message names the first one already
            for problem in problems:
                echo(f"  {problem.get('path') or '/'}: {problem.get('message')} ({problem.get('rule')})",
                           err=True)
        if self.code == "version_conflict" and self.details.get("rule") == "current_version":
            tag = self.details.get("tag")
            echo(f"hint: `aob workflow show {tag}` shows the current version; merge your change into it, "
                       "or save over it with `aob workflow create --force`", err=True)
        if self.code == "ambiguous" and self.details.get("approval_ids"):  # a loop's gate, waiting once a pass
            ids = self.details["approval_ids"]
            echo(f"hint: decide one by its id: `aob approve {ids[0]}` (or `aob reject {ids[0]}`); "
                 "`aob approvals list --run RUN_ID` shows each one's message", err=True)
        if self.code == "workflow_in_use":
            echo("hint: `aob workflow delete TAG --force` deletes them with it", err=True)
        if self.code == "not_authenticated":
            echo("hint: log in with `aob login`, or set AOB_TOKEN", err=True)


def _retry_after(response: httpx.Response) -> float | None:
    """The seconds a 429's ``Retry-After`` names (whole seconds, as the API sends it), within
    ``RATE_WAIT_MAX_S``; None when it names none."""
    if response.status_code != 429:
        return None
    try:
        seconds = float(response.headers.get("retry-after", ""))
    except ValueError:
        return None
    return min(RATE_WAIT_MAX_S, max(0.5, seconds)) if seconds == seconds else None  # NaN names none


def unwritable(exc: UnicodeError, to: str = "the API") -> ApiError:
    """The error for a request that cannot be written: a lone surrogate (an argument's bytes that
    were not UTF-8, kept by Python as surrogates) in its URL or body, a header beyond ASCII."""
    return ApiError(f"the request to {to} cannot be written: {exc}", code="bad_request")


def segment(value: Any) -> str:
    """One path segment, quoted: a tag or an id never changes which endpoint is called."""
    try:
        return quote(str(value), safe="")
    except UnicodeEncodeError as exc:
        raise unwritable(exc) from None


def in_the_clear(api_url: str) -> str | None:
    """The host of ``api_url`` when what is sent there crosses a network readable on the way (plain
    http to a host that is not this machine's loopback), else None."""
    parts = urlsplit(api_url)
    host = parts.hostname or ""
    if parts.scheme != "http" or host == "localhost" or host.endswith(".localhost"):
        return None
    try:
        return None if ipaddress.ip_address(host).is_loopback else host
    except ValueError:  # a name: another machine's, as far as we know
        return host


def _check_url(api_url: str) -> None:
    """An API URL httpx and the loopback check can read (a port that is a number, brackets closed
    around an IPv6 address), else the error naming it: both raised their own traceback."""
    try:
        parts = urlsplit(api_url)
        parts.port  # noqa: B018 - read to judge it: a port that is no number raises here
        url = httpx.URL(api_url)
        host = url.host  # read as IDNA here: a label it cannot write raises
    except (ValueError, httpx.InvalidURL) as exc:  # UnicodeError too: a host name IDNA cannot write
        raise ApiError(f"the API URL {api_url!r} cannot be read: {exc}; give one such as https://aob.example.com "
                       "(--api-url, AOB_API_URL)", code="bad_url") from None
    if url.scheme not in ("http", "https") or not host:
        raise ApiError(f"the API URL {api_url!r} must begin with http:// or https:// and name a host (--api-url, "
                       "AOB_API_URL)", code="bad_url")


def _token(token: str | None) -> str | None:
    """The token as a header carries it: the whitespace around it dropped (a secret mounted from a
    file ends in a newline), and nothing but printable ASCII within, else an error that never shows
    it (httpx's refusal of the header quoted it whole, as an unreachable server)."""
    if token is None:
        return None
    token = token.strip()
    if not token or not (token.isascii() and token.isprintable()) or " " in token:
        raise ApiError("the token (--token, AOB_TOKEN or the one `aob login` stored) is empty or holds spaces or "
                       "characters beyond printable ASCII: copy it again", code="bad_token")
    return token


class ApiClient:
    def __init__(self, api_url: str, token: str | None = None, timeout: float = 30.0, *,
                 sends: str | None = None, allow_http: bool = False) -> None:
        """``sends``: the secret its requests carry besides a token ("password" for a login), which,
        as a token, never goes over plain http to another machine unless ``allow_http``."""
        self.api_url = api_url.rstrip("/")
        _check_url(self.api_url)
        self.token = token = _token(token)
        secret = "token" if token else sends
        host = in_the_clear(self.api_url) if secret and not allow_http else None
        if host:
            raise ApiError(f"refusing to send your {secret} over plain http to {host}: anyone on the network "
                           "between can read it; use https, or --allow-http (AOB_ALLOW_HTTP=1) on a network "
                           "you trust", code="insecure_url")
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if token:
            headers["Authorization"] = f"Token {token}"
        self._http = httpx.Client(base_url=f"{self.api_url}/api/v1/", headers=headers, timeout=timeout)
        self.answered = False  # a JSON answer was read: a command's KeyError may be the server's shape

    def close(self) -> None:
        self._http.close()

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def get_with_next(self, path: str, **params: Any) -> tuple[Any, str | None]:
        """A GET's answer and where its next page is, when its ``Link`` header says (``rel="next"``)."""
        data, response = self._exchange("GET", path, params=params)
        return data, response.links.get("next", {}).get("url")

    def post(self, path: str, body: Any = None, *, headers: dict[str, str] | None = None) -> Any:
        return self.request("POST", path, body=body, headers=headers)

    def post_once(self, path: str, body: Any, *, idempotency_key: str, retries: int = 2,
              what: str = "the run may have started: send the same start") -> Any:
        """A run start (or a patch), safe to retry: the server answers a repeated ``Idempotency-Key``
        with what the first request made, so a request whose answer was lost (a timeout) is sent again."""
        for attempt in range(retries + 1):
            try:
                return self.post(path, body, headers={"Idempotency-Key": idempotency_key})
            except ApiError as exc:
                if exc.code != "unreachable":
                    raise
                if attempt == retries:  # it may have reached the server: the key finds what it made, never a second
                    raise ApiError(f"{exc.message}; {what} again with --idempotency-key {idempotency_key} to get "
                                   "it, not a second one", code=exc.code) from None
        raise AssertionError("unreachable")

    def patch(self, path: str, body: Any = None) -> Any:
        return self.request("PATCH", path, body=body)

    def put(self, path: str, body: Any = None) -> Any:
        return self.request("PUT", path, body=body)

    def delete(self, path: str, *, params: dict[str, Any] | None = None) -> Any:
        return self.request("DELETE", path, params=params)

    def request(self, method: str, path: str, *, body: Any = None, params: dict[str, Any] | None = None,
                headers: dict[str, str] | None = None) -> Any:
        return self._exchange(method, path, body=body, params=params, headers=headers)[0]

    def _exchange(self, method: str, path: str, *, body: Any = None, params: dict[str, Any] | None = None,
                  headers: dict[str, str] | None = None) -> tuple[Any, httpx.Response]:
        """One request, sent again after the wait a rate limit's 429 names (``Retry-After``), up to
        ``RATE_WAITS`` times, each said on stderr: the server refuses past a limit before it does
        anything, so a repeat is safe, and a script's loop of starts or a delete of many runs goes on
        rather than failing midway."""
        for _ in range(RATE_WAITS):
            try:
                return self._exchange_once(method, path, body=body, params=params, headers=headers)
            except ApiError as exc:
                if exc.status != 429 or exc.retry_after is None:
                    raise
                echo(f"{exc.message}: waiting {exc.retry_after:g} s", err=True)
                time.sleep(exc.retry_after)
        return self._exchange_once(method, path, body=body, params=params, headers=headers)

    def _exchange_once(self, method: str, path: str, *, body: Any = None, params: dict[str, Any] | None = None,
                       headers: dict[str, str] | None = None) -> tuple[Any, httpx.Response]:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._http.request(method, path.lstrip("/"), json=body, params=query, headers=headers)
        except httpx.TransportError as exc:
            said = str(exc).replace(self.token, "<token>") if self.token else str(exc)
            raise ApiError(f"cannot reach the API at {self.api_url}: {said}", code="unreachable") from None
        except httpx.RequestError as exc:  # DecodingError: a body its Content-Encoding does not describe (a proxy's)
            said = str(exc).replace(self.token, "<token>") if self.token else str(exc)
            raise ApiError(f"the answer of the API at {self.api_url} to {method} {path} cannot be read: {said}",
                           code="bad_answer") from None
        except UnicodeError as exc:  # a host IDNA cannot write, a header beyond ASCII
            raise unwritable(exc, self.api_url) from None
        if response.is_redirect:  # never a success: nothing was done (a proxy's move to https, say)
            where = response.headers.get("location", "nowhere said")
            raise ApiError(f"{method} {response.url} was redirected (HTTP {response.status_code}) to {where}: nothing "
                           "was done; use the address it names as --api-url", code="redirected",
                           status=response.status_code)
        if response.status_code == 204 or not response.content:
            data = None
        else:
            try:
                data = response.json()
                self.answered = True
            except ValueError:
                data = None
        if response.is_error:
            if isinstance(data, dict) and isinstance(data.get("message"), str):
                raise ApiError(data["message"], code=str(data.get("error") or "error"), status=response.status_code,
                               details=data.get("details") if isinstance(data.get("details"), dict) else {},
                               retry_after=_retry_after(response))
            raise ApiError(f"{method} {response.url} answered HTTP {response.status_code} without an error body",
                           status=response.status_code)
        if data is None and response.status_code != 204 and response.content:
            raise ApiError(f"{method} {response.url} answered something that is not JSON", status=response.status_code)
        return data, response
