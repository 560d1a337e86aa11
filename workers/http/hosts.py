"""Host names and addresses: normalization, numeric host forms, and the blocked-address table.

Nothing here trusts Python's ``ipaddress.is_global`` / ``is_private`` alone: they misjudge
multicast, CGNAT, NAT64, 6to4, Teredo and cloud metadata addresses, so the policy is an explicit
table with a reason per range (``docs/SECURITY.md`` renders the same table for people).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

import idna

from workers.http.exceptions import SSRFBlocked

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# --- the blocked-address table -------------------------------------------------------------------


@dataclass(frozen=True)
class BlockedNetwork:
    network: IPNetwork
    rule: str
    why: str


def _table(rows: Iterable[tuple[str, str, str]]) -> tuple[BlockedNetwork, ...]:
    entries = [BlockedNetwork(ipaddress.ip_network(cidr), rule, why) for cidr, rule, why in rows]
    # Longest prefix first, so a metadata /32 inside link-local reports "cloud-metadata".
    return tuple(sorted(entries, key=lambda e: -e.network.prefixlen))


BLOCKED_NETWORKS: tuple[BlockedNetwork, ...] = _table([
    # IPv4
    ("0.0.0.0/8", "this-network", "RFC 1122 'this network'; 0.0.0.0 reaches the local host on Linux"),
    ("10.0.0.0/8", "private", "RFC 1918 private network"),
    ("100.64.0.0/10", "cgnat", "RFC 6598 carrier-grade NAT shared space (not global, not RFC 1918)"),
    ("100.100.100.200/32", "cloud-metadata", "Alibaba Cloud metadata service"),
    ("127.0.0.0/8", "loopback", "RFC 1122 loopback"),
    ("168.63.129.16/32", "cloud-metadata", "Azure WireServer / platform host"),
    ("169.254.0.0/16", "link-local", "RFC 3927 link-local"),
    ("169.254.169.254/32", "cloud-metadata", "AWS, GCP, Azure, OCI, DigitalOcean, OpenStack metadata"),
    ("169.254.170.2/32", "cloud-metadata", "AWS ECS task metadata and credentials"),
    ("172.16.0.0/12", "private", "RFC 1918 private network"),
    ("192.0.0.0/24", "ietf-protocol-assignments", "RFC 6890 IETF protocol assignments"),
    ("192.0.0.192/32", "cloud-metadata", "Oracle Cloud legacy metadata"),
    ("192.0.2.0/24", "documentation", "RFC 5737 TEST-NET-1"),
    ("192.88.99.0/24", "6to4-relay", "RFC 7526 deprecated 6to4 relay anycast"),
    ("192.168.0.0/16", "private", "RFC 1918 private network"),
    ("198.18.0.0/15", "benchmarking", "RFC 2544 benchmarking"),
    ("198.51.100.0/24", "documentation", "RFC 5737 TEST-NET-2"),
    ("203.0.113.0/24", "documentation", "RFC 5737 TEST-NET-3"),
    ("224.0.0.0/4", "multicast", "RFC 5771 multicast"),
    ("240.0.0.0/4", "reserved", "RFC 1112 reserved (class E)"),
    ("255.255.255.255/32", "broadcast", "RFC 919 limited broadcast"),
    # IPv6
    ("::/128", "unspecified", "RFC 4291 unspecified address"),
    ("::1/128", "loopback", "RFC 4291 loopback"),
    ("::ffff:0:0/96", "ipv4-mapped", "RFC 4291 IPv4-mapped; the kernel connects to the embedded IPv4"),
    ("::/96", "ipv4-compatible", "RFC 4291 deprecated IPv4-compatible"),
    ("::ffff:0:0:0/96", "ipv4-translated", "RFC 2765 SIIT IPv4-translated"),
    ("64:ff9b::/96", "nat64", "RFC 6052 NAT64 well-known prefix; reaches the embedded IPv4"),
    ("64:ff9b:1::/48", "nat64", "RFC 8215 local-use NAT64"),
    ("100::/64", "discard-only", "RFC 6666 discard-only"),
    ("2001::/23", "ietf-protocol-assignments", "RFC 2928 IETF protocol assignments"),
    ("2001::/32", "teredo", "RFC 4380 Teredo; embeds server and client IPv4"),
    ("2001:2::/48", "benchmarking", "RFC 5180 benchmarking"),
    ("2001:db8::/32", "documentation", "RFC 3849 documentation"),
    ("2002::/16", "6to4", "RFC 3056 6to4; embeds an IPv4"),
    ("3fff::/20", "documentation", "RFC 9637 documentation"),
    ("5f00::/16", "srv6", "RFC 9602 SRv6 SIDs"),
    ("fc00::/7", "ula", "RFC 4193 unique local addresses"),
    ("fd00:ec2::254/128", "cloud-metadata", "AWS instance metadata (IPv6)"),
    ("fd20:ce::254/128", "cloud-metadata", "GCP metadata server (IPv6)"),
    ("fe80::/10", "link-local", "RFC 4291 link-local"),
    ("fec0::/10", "site-local", "RFC 3879 deprecated site-local"),
    ("ff00::/8", "multicast", "RFC 4291 multicast"),
    # Everything outside global unicast 2000::/3 (more specific rows above win).
    ("::/3", "reserved", "outside IPv6 global unicast 2000::/3"),
    ("4000::/2", "reserved", "outside IPv6 global unicast 2000::/3"),
    ("8000::/1", "reserved", "outside IPv6 global unicast 2000::/3"),
])

BLOCKED_NAMES: dict[str, str] = {
    "localhost": "loopback name",
    "localhost.localdomain": "loopback name",
    "ip6-localhost": "loopback name",
    "ip6-loopback": "loopback name",
    "metadata": "cloud metadata name",
    "metadata.google.internal": "GCP metadata name",
    "metadata.goog": "GCP metadata name",
    "instance-data": "AWS metadata name",
    "instance-data.ec2.internal": "AWS metadata name",
    "kubernetes.default.svc": "Kubernetes API name",
}
BLOCKED_NAME_SUFFIXES: dict[str, str] = {
    "localhost": "RFC 6761 .localhost always resolves to loopback",
    "internal": "ICANN private-use .internal (cloud metadata and internal hosts)",
    "cluster.local": "Kubernetes cluster names",
    "local": "RFC 6762 mDNS .local (LAN devices)",
    "home.arpa": "RFC 8375 home network",
}

_EMBEDDING_RULES = {"ipv4-mapped", "ipv4-compatible", "ipv4-translated", "nat64", "6to4", "teredo"}
NEVER_BY_NAME = {"cloud-metadata"}  # a host-name allowlist entry never opens these


@dataclass(frozen=True)
class AddressVerdict:
    rule: str
    network: IPNetwork
    embedded: ipaddress.IPv4Address | None = None
    embedded_rule: str | None = None

    def describe(self, address: IPAddress) -> str:
        text = f"blocked address {address}: {self.rule}"
        if self.embedded is not None:
            text += f" (embeds {self.embedded}: {self.embedded_rule or 'public'})"
        return text


def _embedded_ipv4(address: ipaddress.IPv6Address, rule: str) -> ipaddress.IPv4Address | None:
    value = int(address)
    if rule in {"ipv4-mapped", "ipv4-compatible", "ipv4-translated", "nat64"}:
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    if rule == "6to4":
        return ipaddress.IPv4Address((value >> 80) & 0xFFFFFFFF)
    if rule == "teredo":  # the client address, obfuscated by inversion in the last 32 bits
        return ipaddress.IPv4Address(~value & 0xFFFFFFFF)
    return None


def blocked_reason(address: IPAddress) -> AddressVerdict | None:
    """The rule refusing ``address``, or None when it is an ordinary public address.

    Embedding ranges (IPv4-mapped, NAT64, 6to4, Teredo...) are refused whatever they embed,
    and the verdict also names the embedded IPv4's own rule so the message explains the risk.
    """
    for entry in BLOCKED_NETWORKS:
        if entry.network.version == address.version and address in entry.network:
            if entry.rule in _EMBEDDING_RULES and isinstance(address, ipaddress.IPv6Address):
                inner = _embedded_ipv4(address, entry.rule)
                inner_verdict = blocked_reason(inner) if inner is not None else None
                return AddressVerdict(entry.rule, entry.network, inner,
                                      inner_verdict.rule if inner_verdict else None)
            return AddressVerdict(entry.rule, entry.network)
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        return AddressVerdict("scoped-address", ipaddress.IPv6Network((int(address), 128)))
    if not address.is_global:  # backstop for anything a future Python knows better
        return AddressVerdict("not-global", ipaddress.ip_network(address))
    return None


def is_metadata(address: IPAddress, verdict: AddressVerdict | None) -> bool:
    if verdict is None:
        return False
    return verdict.rule in NEVER_BY_NAME or verdict.embedded_rule in NEVER_BY_NAME


# --- host normalization and numeric hosts --------------------------------------------------------

_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\Z")
_NUMERIC_LABEL = re.compile(r"^(\d+|0x[0-9a-f]*)\Z")


def normalize_host(host: str, *, url: str | None = None) -> str:
    """Lower-case, IDNA (UTS 46) to punycode, one trailing dot dropped, characters validated.

    UTS 46 mapping folds full-width letters and digits and ideographic full stops, so
    ``ｌｏｃａｌｈｏｓｔ。`` and ``１２７.０.０.１`` are judged as ``localhost`` and ``127.0.0.1``.
    """
    text = host
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if ":" in text:  # IPv6 literal, judged by parse_numeric_host
        return text.lower()
    if not text.isascii():
        try:
            text = idna.encode(text, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError) as exc:
            raise SSRFBlocked(f"invalid host name {host!r}: {exc}", rule="invalid-host", url=url) from exc
    text = text.lower()
    if text.endswith("."):
        text = text[:-1]
    labels = text.split(".")
    if not text or len(text) > 253 or not all(_LABEL.match(label) for label in labels):
        raise SSRFBlocked(f"invalid host name {host!r}", rule="invalid-host", url=url)
    return text


def _parse_ipv4_part(part: str) -> int:
    if part.startswith("0x"):
        return int(part[2:] or "0", 16)
    if len(part) > 1 and part.startswith("0"):
        return int(part[1:], 8)
    return int(part, 10)


def parse_numeric_host(host: str, *, url: str | None = None) -> IPAddress | None:
    """The address a numeric host denotes (inet_aton semantics), or None for a host name.

    ``127.1``, ``2130706433``, ``0x7f000001``, ``017700000001`` and ``0177.0.0.1`` all reach
    127.0.0.1 through the C library, so they are judged as 127.0.0.1. A host whose last label
    is a number but that does not parse (``1.2.3.4.5``, ``08.0.0.1``) is refused outright
    rather than handed to DNS, as the WHATWG URL standard does. ``host`` must be normalized.
    """
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise SSRFBlocked(f"invalid IPv6 host {host!r}", rule="invalid-host", url=url) from exc
    parts = host.split(".")
    if not _NUMERIC_LABEL.match(parts[-1]):
        return None
    try:
        if len(parts) > 4 or not all(_NUMERIC_LABEL.match(p) for p in parts):
            raise ValueError(host)
        numbers = [_parse_ipv4_part(p) for p in parts]
        *head, last = numbers
        if any(n > 255 for n in head) or last >= 256 ** (5 - len(numbers)):
            raise ValueError(host)
        value = last
        for index, number in enumerate(head):
            value |= number << (8 * (3 - index))
        return ipaddress.IPv4Address(value)
    except ValueError as exc:
        raise SSRFBlocked(f"malformed numeric host {host!r}", rule="invalid-host", url=url) from exc


def blocked_name_reason(host: str) -> tuple[str, str] | None:
    """``(rule, why)`` refusing a normalized host name before any lookup, or None."""
    if host in BLOCKED_NAMES:
        return "blocked-name", BLOCKED_NAMES[host]
    for suffix, why in BLOCKED_NAME_SUFFIXES.items():
        if host == suffix or host.endswith("." + suffix):
            return "blocked-name", why
    if "." not in host:
        return "single-label-name", "single-label name (resolved through search domains to internal hosts)"
    return None
