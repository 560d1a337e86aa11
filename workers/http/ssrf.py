"""The SSRF policy: which outbound destinations AOB may reach, decided before any byte is sent.

Every outbound request (HTTP nodes, agent tools) goes through :mod:`workers.http.client`, which
judges each URL here twice: statically (scheme, userinfo, port, names, numeric hosts) before a
request is built, and at connect time, where the host is resolved exactly once and every answer
is judged before a socket is opened to one of those same answers. The address and name rules
live in :mod:`workers.http.hosts`; this module adds the settings, the allowlist and the verdicts.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from django.core.exceptions import ImproperlyConfigured

from aob_project.decimal_text import bounded_decimal
from workers.http.exceptions import DNSResolutionFailed, SSRFBlocked
from workers.http.hosts import (
    IPAddress,
    IPNetwork,
    blocked_name_reason,
    blocked_reason,
    is_metadata,
    normalize_host,
    parse_numeric_host,
)

__all__ = [
    "AllowEntry", "CheckedTarget", "HttpPolicy", "Resolver", "SSRFBlocked", "Target", "check_url",
    "check_url_static", "default_resolver", "parse_allow_entry", "policy_from_settings", "resolve_checked",
]

Resolver = Callable[[str, int], list[str]]
"""``resolve(host, port) -> ["203.0.113.7", ...]``; raise ``OSError`` when the name has no answer."""

ALLOWED_SCHEMES = frozenset({"http", "https"})
DEFAULT_PORTS = {"http": 80, "https": 443}


# --- policy and allowlist ------------------------------------------------------------------------


@dataclass(frozen=True)
class AllowEntry:
    """One ``AOB_HTTP_ALLOWLIST`` entry: a name (``*.`` wildcard allowed) or a network, maybe a port."""

    raw: str
    name: str | None = None
    network: IPNetwork | None = None
    port: int | None = None

    def opens(self, port: int, allowed_ports: frozenset[int]) -> bool:
        return port == self.port if self.port is not None else port in allowed_ports

    def matches_name(self, host: str) -> bool:
        if self.name is None:
            return False
        if self.name.startswith("*."):
            return host.endswith(self.name[1:])
        return host == self.name

    def matches_address(self, address: IPAddress) -> bool:
        return (self.network is not None and self.network.version == address.version
                and address in self.network)


def _port_number(text: str, raw: str) -> int:
    port = bounded_decimal(text, 5)
    if port is None or not 0 < port < 65536:
        raise ImproperlyConfigured(f"AOB_HTTP_ALLOWLIST entry {raw!r}: bad port {text!r}")
    return port


def parse_allow_entry(raw: str) -> AllowEntry:
    """Parse ``host``, ``*.suffix``, ``address``, ``cidr``, each optionally ``:port``.

    IPv6 takes brackets when it carries a port: ``[::1]:8765``, ``[fd00::/8]:443``.
    """
    text = raw.strip()
    port: int | None = None
    if text.startswith("["):
        inner, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ImproperlyConfigured(f"AOB_HTTP_ALLOWLIST entry {raw!r}: unbalanced brackets")
        text, port = inner, (_port_number(rest[1:], raw) if rest else None)
    elif text.count(":") == 1:
        text, port_text = text.split(":")
        port = _port_number(port_text, raw)
    if not text:
        raise ImproperlyConfigured(f"AOB_HTTP_ALLOWLIST entry {raw!r}: empty host")
    try:
        if "/" in text or ":" in text:
            return AllowEntry(raw, network=ipaddress.ip_network(text), port=port)
        wildcard = text.startswith("*.")
        host = normalize_host(text[2:] if wildcard else text)
        address = parse_numeric_host(host)
        if address is not None:
            return AllowEntry(raw, network=ipaddress.ip_network(address), port=port)
        return AllowEntry(raw, name=("*." + host) if wildcard else host, port=port)
    except (ValueError, SSRFBlocked) as exc:
        raise ImproperlyConfigured(f"AOB_HTTP_ALLOWLIST entry {raw!r}: {exc}") from exc


@dataclass(frozen=True)
class HttpPolicy:
    """A snapshot of the AOB_HTTP_* settings; hashable, so the client can key its pool on it."""

    allowed_ports: frozenset[int] = frozenset({80, 443})
    allowlist: tuple[AllowEntry, ...] = ()
    max_response_bytes: int = 10 * 1024 * 1024
    max_redirects: int = 5
    timeout_s: float = 30.0
    _address_ports: frozenset[int | None] = field(default=frozenset(), compare=False, repr=False)

    def name_entry(self, host: str, port: int) -> AllowEntry | None:
        return next((e for e in self.allowlist
                     if e.matches_name(host) and e.opens(port, self.allowed_ports)), None)

    def address_entry(self, address: IPAddress, port: int) -> AllowEntry | None:
        return next((e for e in self.allowlist
                     if e.matches_address(address) and e.opens(port, self.allowed_ports)), None)

    def port_may_open(self, port: int) -> bool:
        """Whether ``port`` could be allowed for some resolved address (decided after lookup)."""
        return port in self.allowed_ports or port in self._address_ports


def _setting(name: str, default: Any) -> Any:
    from django.conf import settings

    try:
        return getattr(settings, name, default)
    except ImproperlyConfigured:  # settings not configured (a bare script): use the defaults
        return default


@functools.lru_cache(maxsize=32)
def _policy_build(allowlist: tuple[str, ...], ports: tuple[int, ...], max_bytes: int,
                  max_redirects: int, timeout_s: float) -> HttpPolicy:
    entries = tuple(parse_allow_entry(raw) for raw in allowlist if raw.strip())
    return HttpPolicy(
        allowed_ports=frozenset(ports), allowlist=entries, max_response_bytes=max_bytes,
        max_redirects=max_redirects, timeout_s=timeout_s,
        _address_ports=frozenset(e.port for e in entries if e.network is not None and e.port is not None),
    )


def policy_from_settings() -> HttpPolicy:
    """Read the AOB_HTTP_* settings at call time (so override_settings works), parsed once per value."""
    return _policy_build(
        tuple(str(e) for e in _setting("AOB_HTTP_ALLOWLIST", None) or ()),
        tuple(int(p) for p in _setting("AOB_HTTP_ALLOWED_PORTS", None) or (80, 443)),
        int(_setting("AOB_HTTP_MAX_RESPONSE_BYTES", 10 * 1024 * 1024)),
        int(_setting("AOB_HTTP_MAX_REDIRECTS", 5)),
        float(_setting("AOB_HTTP_TIMEOUT_S", 30.0)),
    )


# --- judging -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A URL that passed the static checks. ``address`` is set when the host is numeric."""

    url: str
    scheme: str
    host: str
    port: int
    address: IPAddress | None
    allowed_by: str | None


@dataclass(frozen=True)
class CheckedTarget(Target):
    """A URL that passed every check, with the resolved addresses it may connect to."""

    addresses: tuple[str, ...] = ()


def _judge_address(address: IPAddress, port: int, policy: HttpPolicy, *, url: str | None,
                   name_entry: AllowEntry | None = None) -> str | None:
    verdict = blocked_reason(address)
    entry = policy.address_entry(address, port)
    if entry is not None:
        return entry.raw
    if name_entry is not None and not is_metadata(address, verdict):
        return name_entry.raw
    if verdict is not None:
        raise SSRFBlocked(verdict.describe(address), rule=verdict.rule, url=url, address=str(address),
                          **({"embedded": str(verdict.embedded)} if verdict.embedded else {}))
    if port not in policy.allowed_ports:
        raise _port_refused(port, policy, url)
    return None


def _port_refused(port: int, policy: HttpPolicy, url: str | None) -> SSRFBlocked:
    allowed = ", ".join(str(p) for p in sorted(policy.allowed_ports))
    return SSRFBlocked(f"port {port} is not allowed (allowed: {allowed}, or an allowlist entry)",
                       rule="port", url=url, port=port)


def _refuse_blocked_name(host: str, *, url: str | None) -> None:
    verdict = blocked_name_reason(host)
    if verdict is not None:
        rule, why = verdict
        raise SSRFBlocked(f"blocked name {host!r}: {why}", rule=rule, url=url, host=host)


def _judge_name(host: str, port: int, policy: HttpPolicy, *, url: str | None) -> AllowEntry | None:
    entry = policy.name_entry(host, port)
    if entry is not None:
        return entry
    _refuse_blocked_name(host, url=url)
    if not policy.port_may_open(port):
        raise _port_refused(port, policy, url)
    return None


def _parse(url: str) -> tuple[str, str, int]:
    """Scheme, raw host, effective port and userinfo, as httpx (which sends the request) sees them."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        # httpx refuses some numeric and Unicode forms that C libraries accept (``0177.0.0.1``,
        # full-width letters); judge what urllib sees, so the message names the real rule.
        try:
            host = urlsplit(url).hostname or ""
        except ValueError:
            host = ""
        if host:
            address = parse_numeric_host(normalize_host(host, url=url), url=url)
            if address is not None:
                verdict = blocked_reason(address)
                if verdict is not None:
                    raise SSRFBlocked(verdict.describe(address), rule=verdict.rule, url=url,
                                      address=str(address)) from exc
            else:
                _refuse_blocked_name(normalize_host(host, url=url), url=url)
        raise SSRFBlocked(f"invalid URL: {exc}", rule="invalid-url", url=url) from exc
    scheme = parsed.scheme
    if scheme not in ALLOWED_SCHEMES:
        raise SSRFBlocked(f"scheme {scheme!r} is not allowed (http and https only)", rule="scheme", url=url)
    if parsed.userinfo or "@" in parsed.netloc.decode("ascii", "replace"):
        raise SSRFBlocked("credentials in the URL are not allowed; send them as headers",
                          rule="userinfo", url=url)
    raw_host = parsed.raw_host.decode("ascii", "replace")
    if not raw_host:
        raise SSRFBlocked("URL has no host", rule="invalid-host", url=url)
    return scheme, raw_host, parsed.port if parsed.port is not None else DEFAULT_PORTS[scheme]


def check_url_static(url: str, *, policy: HttpPolicy | None = None) -> Target:
    """Every check that needs no DNS: scheme, userinfo, port, blocked names, numeric hosts.

    Use it to refuse a literal URL (in a run patch, a node config) without a lookup. A host
    name that passes may still be refused at connect time by what it resolves to.
    """
    policy = policy or policy_from_settings()
    scheme, raw_host, port = _parse(url)
    if not 0 < port < 65536:
        raise _port_refused(port, policy, url)
    host = normalize_host(raw_host, url=url)
    address = parse_numeric_host(host, url=url)
    if address is not None:
        allowed_by = _judge_address(address, port, policy, url=url)
    else:
        entry = _judge_name(host, port, policy, url=url)
        allowed_by = entry.raw if entry else None
    return Target(url=url, scheme=scheme, host=host, port=port, address=address, allowed_by=allowed_by)


def default_resolver(host: str, port: int) -> list[str]:
    """All addresses the system resolver gives for ``host`` (TCP), in its preference order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def resolve_checked(*, host: str, port: int, policy: HttpPolicy | None = None,
                    resolver: Resolver | None = None, url: str | None = None) -> list[str]:
    """Resolve ``host`` once and return its addresses, all judged; refuse if any one is blocked.

    Refusing on *any* blocked answer (not just skipping it) is what defeats a name that answers
    with a public and a private address. Failing or empty resolution refuses: fail closed.
    The caller must connect only to the returned strings, never to ``host`` again.
    """
    policy = policy or policy_from_settings()
    resolver = resolver or default_resolver
    if not 0 < port < 65536:
        raise _port_refused(port, policy, url)
    name = normalize_host(host, url=url)
    literal = parse_numeric_host(name, url=url)
    if literal is not None:
        _judge_address(literal, port, policy, url=url)
        return [str(literal)]
    name_entry = _judge_name(name, port, policy, url=url)
    try:
        answers = list(resolver(name, port))
    except UnicodeError as exc:
        raise SSRFBlocked(f"could not resolve {name!r}: {exc}", rule="unresolvable", url=url, host=name) from exc
    except OSError as exc:
        raise DNSResolutionFailed(f"could not resolve {name!r}: {exc}", url=url, host=name) from exc
    if not answers:
        raise DNSResolutionFailed(f"{name!r} resolved to no address", url=url, host=name)
    addresses: list[str] = []
    for answer in answers:
        try:
            address = ipaddress.ip_address(str(answer))
        except ValueError as exc:
            raise SSRFBlocked(f"{name!r} resolved to a non-address {answer!r}", rule="unresolvable",
                              url=url, host=name) from exc
        _judge_address(address, port, policy, url=url, name_entry=name_entry)
        if str(address) not in addresses:
            addresses.append(str(address))
    return addresses


def check_url(url: str, *, resolver: Resolver | None = None, policy: HttpPolicy | None = None) -> CheckedTarget:
    """The full check of one URL, DNS included. Raises :class:`SSRFBlocked`.

    A preflight for callers that want a verdict; the client does not call it (that would be a
    second lookup): it checks statically, then resolves and judges at connect time.
    """
    policy = policy or policy_from_settings()
    target = check_url_static(url, policy=policy)
    addresses = resolve_checked(host=target.host, port=target.port, policy=policy, resolver=resolver, url=url)
    return CheckedTarget(**{**target.__dict__, "addresses": tuple(addresses)})
