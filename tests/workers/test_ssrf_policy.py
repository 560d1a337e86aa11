"""The SSRF policy, judged without the network: a stub resolver stands in for DNS everywhere."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from workers.http.hosts import BLOCKED_NETWORKS, blocked_reason, normalize_host, parse_numeric_host
from workers.http.ssrf import (
    SSRFBlocked,
    check_url,
    check_url_static,
    parse_allow_entry,
    policy_from_settings,
    resolve_checked,
)

DNS = {
    "example.com": ["93.184.215.14"],
    "www.example.org": ["93.184.215.15"],
    "xn--bcher-kva.de": ["81.169.145.78"],
    "v6.example.com": ["2606:2800:220:1:248:1893:25c8:1946"],
    "multi.example.com": ["93.184.215.14", "2606:2800:220:1:248:1893:25c8:1946"],
    "rebind.example": ["127.0.0.1"],
    "internal.example.com": ["10.1.2.3"],
    "mixed.example.com": ["93.184.215.14", "10.0.0.1"],
    "mixed-late.example.com": ["93.184.215.14", "2606:2800:220:1::1", "169.254.169.254"],
    "v6private.example.com": ["fd00::1"],
    "metadata-alias.example.com": ["169.254.169.254"],
    "mapped.example.com": ["::ffff:127.0.0.1"],
    "cgnat.example.com": ["100.64.1.1"],
    "empty.example.com": [],
    "garbage.example.com": ["not-an-ip"],
    "internal.corp": ["10.9.8.7"],
    "api.svc.corp": ["10.9.8.8"],
    "evil.corp": ["169.254.169.254"],
}


def stub_resolver(host: str, port: int) -> list[str]:
    if host not in DNS:
        raise socket.gaierror(socket.EAI_NONAME, f"stub: no such name {host}")
    return list(DNS[host])


def no_dns(host: str, port: int) -> list[str]:
    raise AssertionError(f"no lookup expected, got one for {host}")


REFUSED = [
    # scheme
    pytest.param("ftp://example.com/", "scheme", id="ftp"),
    pytest.param("file:///etc/passwd", "scheme", id="file"),
    pytest.param("gopher://example.com:70/_x", "scheme", id="gopher"),
    pytest.param("dict://example.com:11211/stat", "scheme", id="dict"),
    pytest.param("ws://example.com/", "scheme", id="websocket"),
    pytest.param("javascript:alert(1)", "scheme", id="javascript"),
    pytest.param("not a url", "scheme", id="no-scheme"),
    # credentials in the URL
    pytest.param("http://user:pw@example.com/", "userinfo", id="user-password"),
    pytest.param("http://user@example.com/", "userinfo", id="user-only"),
    pytest.param("http://evil.com\\@127.0.0.1/", "userinfo", id="backslash-confusion"),
    pytest.param("http://example.com:80@127.0.0.1/", "userinfo", id="port-lookalike-userinfo"),
    # ports
    pytest.param("http://example.com:22/", "port", id="ssh-port"),
    pytest.param("http://example.com:6379/", "port", id="redis-port"),
    pytest.param("https://example.com:8443/", "port", id="alt-https-port"),
    pytest.param("http://example.com:0/", "port", id="port-zero"),
    pytest.param("http://example.com:65536/", "port", id="port-overflow"),
    pytest.param("http://8.8.8.8:25/", "port", id="public-address-smtp"),
    # names
    pytest.param("http://localhost/", "blocked-name", id="localhost"),
    pytest.param("http://LOCALHOST/", "blocked-name", id="localhost-upper"),
    pytest.param("http://localhost./", "blocked-name", id="localhost-trailing-dot"),
    pytest.param("http://foo.localhost/", "blocked-name", id="sub-localhost"),
    pytest.param("http://a.b.localhost:80/", "blocked-name", id="deep-localhost"),
    pytest.param("http://localhost.localdomain/", "blocked-name", id="localhost-localdomain"),
    pytest.param("http://ip6-localhost/", "blocked-name", id="ip6-localhost"),
    pytest.param("http://metadata.google.internal/computeMetadata/v1/", "blocked-name", id="gcp-metadata"),
    pytest.param("http://METADATA.GOOGLE.INTERNAL./", "blocked-name", id="gcp-metadata-upper-dot"),
    pytest.param("http://metadata.goog/", "blocked-name", id="gcp-metadata-goog"),
    pytest.param("http://metadata/", "blocked-name", id="bare-metadata"),
    pytest.param("http://instance-data/latest/", "blocked-name", id="aws-instance-data"),
    pytest.param("http://instance-data.ec2.internal/", "blocked-name", id="aws-instance-data-fqdn"),
    pytest.param("http://db.internal/", "blocked-name", id="internal-tld"),
    pytest.param("http://printer.local/", "blocked-name", id="mdns-local"),
    pytest.param("http://router.home.arpa/", "blocked-name", id="home-arpa"),
    pytest.param("http://redis.default.svc.cluster.local/", "blocked-name", id="k8s-cluster-local"),
    pytest.param("http://ｌｏｃａｌｈｏｓｔ/", "blocked-name", id="fullwidth-localhost"),
    pytest.param("http://localhost\u3002/", "blocked-name", id="ideographic-dot-localhost"),
    pytest.param("http://redis/", "single-label-name", id="single-label"),
    # IPv4, every numeric spelling
    pytest.param("http://127.0.0.1/", "loopback", id="loopback"),
    pytest.param("http://127.1/", "loopback", id="loopback-two-part"),
    pytest.param("http://127.0.1/", "loopback", id="loopback-three-part"),
    pytest.param("http://2130706433/", "loopback", id="loopback-decimal"),
    pytest.param("http://0x7f000001/", "loopback", id="loopback-hex"),
    pytest.param("http://0X7F000001/", "loopback", id="loopback-hex-upper"),
    pytest.param("http://017700000001/", "loopback", id="loopback-octal"),
    pytest.param("http://0177.0.0.1/", "loopback", id="loopback-octal-dotted"),
    pytest.param("http://0x7f.0.0.1/", "loopback", id="loopback-hex-dotted"),
    pytest.param("http://0x7f.1/", "loopback", id="loopback-mixed"),
    pytest.param("http://0177.0x0.1/", "loopback", id="loopback-octal-hex-decimal"),
    pytest.param("http://127.0.0.1./", "loopback", id="loopback-trailing-dot"),
    pytest.param("http://１２７.０.０.１/", "loopback", id="loopback-fullwidth-digits"),
    pytest.param("http://127.255.255.254:443/", "loopback", id="loopback-top"),
    pytest.param("http://0/", "this-network", id="zero"),
    pytest.param("http://0.0.0.0/", "this-network", id="zeros"),
    pytest.param("http://10.0.0.1/", "private", id="rfc1918-10"),
    pytest.param("http://012.0.0.1/", "private", id="rfc1918-10-octal"),
    pytest.param("http://172.16.0.1/", "private", id="rfc1918-172-low"),
    pytest.param("http://172.31.255.255/", "private", id="rfc1918-172-high"),
    pytest.param("http://192.168.1.1/", "private", id="rfc1918-192"),
    pytest.param("http://3232235777/", "private", id="rfc1918-192-decimal"),
    pytest.param("http://169.254.169.254/latest/meta-data/", "cloud-metadata", id="aws-imds"),
    pytest.param("http://0xa9fea9fe/", "cloud-metadata", id="imds-hex"),
    pytest.param("http://2852039166/", "cloud-metadata", id="imds-decimal"),
    pytest.param("http://0251.0376.0251.0376/", "cloud-metadata", id="imds-octal"),
    pytest.param("http://169.254.43518/", "cloud-metadata", id="imds-two-part"),
    pytest.param("http://169.254.170.2/v2/credentials", "cloud-metadata", id="ecs-credentials"),
    pytest.param("http://100.100.100.200/", "cloud-metadata", id="alibaba-metadata"),
    pytest.param("http://192.0.0.192/", "cloud-metadata", id="oci-legacy-metadata"),
    pytest.param("http://168.63.129.16/", "cloud-metadata", id="azure-wireserver"),
    pytest.param("http://169.254.1.1/", "link-local", id="link-local"),
    pytest.param("http://100.64.0.1/", "cgnat", id="cgnat"),
    pytest.param("http://100.127.255.255/", "cgnat", id="cgnat-top"),
    pytest.param("http://192.0.0.8/", "ietf-protocol-assignments", id="ietf-192-0-0"),
    pytest.param("http://192.0.2.1/", "documentation", id="test-net-1"),
    pytest.param("http://198.51.100.7/", "documentation", id="test-net-2"),
    pytest.param("http://203.0.113.9/", "documentation", id="test-net-3"),
    pytest.param("http://198.18.0.1/", "benchmarking", id="benchmarking"),
    pytest.param("http://198.19.255.255/", "benchmarking", id="benchmarking-top"),
    pytest.param("http://192.88.99.1/", "6to4-relay", id="6to4-relay"),
    pytest.param("http://224.0.0.1/", "multicast", id="multicast"),
    pytest.param("http://239.255.255.250/", "multicast", id="ssdp-multicast"),
    pytest.param("http://240.0.0.1/", "reserved", id="class-e"),
    pytest.param("http://255.255.255.255/", "broadcast", id="broadcast"),
    pytest.param("http://1.2.3.4.5/", "invalid-host", id="five-parts"),
    pytest.param("http://08.0.0.1/", "invalid-host", id="bad-octal"),
    pytest.param("http://256.0.0.1/", "invalid-host", id="octet-overflow"),
    pytest.param("http://4294967296/", "invalid-host", id="decimal-overflow"),
    pytest.param("http://example.123/", "invalid-host", id="numeric-tld"),
    # IPv6 and its IPv4 embeddings
    pytest.param("http://[::1]/", "loopback", id="v6-loopback"),
    pytest.param("http://[0:0:0:0:0:0:0:1]/", "loopback", id="v6-loopback-long"),
    pytest.param("http://[::]/", "unspecified", id="v6-unspecified"),
    pytest.param("http://[::ffff:127.0.0.1]/", "ipv4-mapped", id="v4-mapped-loopback"),
    pytest.param("http://[::ffff:7f00:1]/", "ipv4-mapped", id="v4-mapped-loopback-hex"),
    pytest.param("http://[::ffff:169.254.169.254]/", "ipv4-mapped", id="v4-mapped-imds"),
    pytest.param("http://[::ffff:8.8.8.8]/", "ipv4-mapped", id="v4-mapped-public"),
    pytest.param("http://[::127.0.0.1]/", "ipv4-compatible", id="v4-compatible"),
    pytest.param("http://[::ffff:0:a9fe:a9fe]/", "ipv4-translated", id="v4-translated"),
    pytest.param("http://[64:ff9b::a9fe:a9fe]/", "nat64", id="nat64-imds"),
    pytest.param("http://[64:ff9b::808:808]/", "nat64", id="nat64-public"),
    pytest.param("http://[64:ff9b:1::1]/", "nat64", id="nat64-local-use"),
    pytest.param("http://[2002:7f00:1::]/", "6to4", id="6to4-loopback"),
    pytest.param("http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", "teredo", id="teredo"),
    pytest.param("http://[2001:db8::1]/", "documentation", id="v6-documentation"),
    pytest.param("http://[3fff::1]/", "documentation", id="v6-documentation-3fff"),
    pytest.param("http://[2001:2::1]/", "benchmarking", id="v6-benchmarking"),
    pytest.param("http://[fc00::1]/", "ula", id="ula-fc"),
    pytest.param("http://[fd12:3456::1]/", "ula", id="ula-fd"),
    pytest.param("http://[fd00:ec2::254]/", "cloud-metadata", id="aws-imds-v6"),
    pytest.param("http://[fd20:ce::254]/", "cloud-metadata", id="gcp-metadata-v6"),
    pytest.param("http://[fe80::1]/", "link-local", id="v6-link-local"),
    pytest.param("http://[fe80::1%25eth0]/", "link-local", id="v6-link-local-zone"),
    pytest.param("http://[fec0::1]/", "site-local", id="v6-site-local"),
    pytest.param("http://[ff02::1]/", "multicast", id="v6-multicast"),
    pytest.param("http://[100::1]/", "discard-only", id="discard-only"),
    pytest.param("http://[4000::1]/", "reserved", id="v6-outside-global-unicast"),
    # names resolved by the stub resolver
    pytest.param("http://rebind.example/", "loopback", id="name-to-loopback"),
    pytest.param("http://internal.example.com/", "private", id="name-to-private"),
    pytest.param("http://mixed.example.com/", "private", id="any-private-answer"),
    pytest.param("http://mixed-late.example.com/", "cloud-metadata", id="private-answer-last"),
    pytest.param("http://v6private.example.com/", "ula", id="name-to-ula"),
    pytest.param("http://metadata-alias.example.com/", "cloud-metadata", id="name-to-imds"),
    pytest.param("http://mapped.example.com/", "ipv4-mapped", id="name-to-v4-mapped"),
    pytest.param("http://cgnat.example.com/", "cgnat", id="name-to-cgnat"),
    pytest.param("http://nxdomain.example.com/", "unresolvable", id="nxdomain-fails-closed"),
    pytest.param("http://empty.example.com/", "unresolvable", id="no-answer-fails-closed"),
    pytest.param("http://garbage.example.com/", "unresolvable", id="non-address-answer"),
    # malformed
    pytest.param("http:///path", "invalid-host", id="empty-host"),
    pytest.param("http://%31%32%37.0.0.1/", "invalid-host", id="percent-encoded-host"),
    pytest.param("http://exa mple.com/", "invalid-host", id="space-in-host"),
    pytest.param("http://127.0.0.1\t/", "loopback", id="control-character"),
]

ALLOWED = [
    pytest.param("http://example.com/", ("93.184.215.14",), id="plain-name"),
    pytest.param("https://example.com/path?q=1", ("93.184.215.14",), id="https-path-query"),
    pytest.param("HTTP://EXAMPLE.COM./", ("93.184.215.14",), id="case-and-trailing-dot"),
    pytest.param("http://example.com:80/", ("93.184.215.14",), id="explicit-80"),
    pytest.param("https://example.com:443/", ("93.184.215.14",), id="explicit-443"),
    pytest.param("http://example.com:443/", ("93.184.215.14",), id="http-on-443"),
    pytest.param("http://example.com/#@127.0.0.1", ("93.184.215.14",), id="fragment-lookalike"),
    pytest.param("http://www.example.org/a?u=http://127.0.0.1/", ("93.184.215.15",), id="url-in-query"),
    pytest.param("https://bücher.de/", ("81.169.145.78",), id="idn-name"),
    pytest.param("http://v6.example.com/", ("2606:2800:220:1:248:1893:25c8:1946",), id="v6-answer"),
    pytest.param("http://multi.example.com/",
                 ("93.184.215.14", "2606:2800:220:1:248:1893:25c8:1946"), id="all-answers-public"),
    pytest.param("http://8.8.8.8/", ("8.8.8.8",), id="public-v4"),
    pytest.param("http://134744072/", ("8.8.8.8",), id="public-v4-decimal"),
    pytest.param("http://[2606:4700:4700::1111]/", ("2606:4700:4700::1111",), id="public-v6"),
    pytest.param("http://[2001:4860:4860::8888]/", ("2001:4860:4860::8888",), id="public-v6-2001"),
    pytest.param("http://172.32.0.1/", ("172.32.0.1",), id="just-past-172-16-12"),
    pytest.param("http://100.128.0.1/", ("100.128.0.1",), id="just-past-cgnat"),
    pytest.param("http://192.169.0.1/", ("192.169.0.1",), id="just-past-192-168"),
    pytest.param("http://169.255.0.1/", ("169.255.0.1",), id="just-past-link-local"),
    pytest.param("http://198.20.0.1/", ("198.20.0.1",), id="just-past-benchmarking"),
    pytest.param("http://223.255.255.254/", ("223.255.255.254",), id="just-below-multicast"),
]


@pytest.mark.parametrize(("url", "rule"), REFUSED)
def test_refused(url: str, rule: str) -> None:
    with pytest.raises(SSRFBlocked) as caught:
        check_url(url, resolver=stub_resolver)
    # a name without an address is a DNS failure (transient), still refused under the same rule
    dns = url in ("http://nxdomain.example.com/", "http://empty.example.com/")
    assert caught.value.code == ("DNSResolutionFailed" if dns else "SSRFBlocked")
    assert caught.value.transient is dns
    assert caught.value.extra["rule"] == rule, str(caught.value)
    assert caught.value.extra["url"] == url


@pytest.mark.parametrize(("url", "addresses"), ALLOWED)
def test_allowed(url: str, addresses: tuple[str, ...]) -> None:
    assert check_url(url, resolver=stub_resolver).addresses == addresses


def test_corpus_is_large_enough() -> None:
    assert len(REFUSED) >= 80 and len(ALLOWED) >= 15


def test_message_names_the_rule_and_address() -> None:
    with pytest.raises(SSRFBlocked, match=r"^blocked address 127\.0\.0\.1: loopback$"):
        check_url("http://2130706433/", resolver=no_dns)


def test_embedded_ipv4_is_named() -> None:
    with pytest.raises(SSRFBlocked) as caught:
        check_url("http://[::ffff:169.254.169.254]/", resolver=no_dns)
    assert "embeds 169.254.169.254: cloud-metadata" in str(caught.value)
    assert caught.value.extra["embedded"] == "169.254.169.254"


# --- static checks need no DNS -------------------------------------------------------------------


@pytest.mark.parametrize("url", ["http://127.1/", "http://localhost/", "ftp://example.com/",
                                 "http://u@example.com/", "http://example.com:8080/", "http://[::1]/"])
def test_static_check_refuses_without_a_lookup(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(SSRFBlocked):
        check_url_static(url)


def test_static_check_passes_a_name_without_a_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    target = check_url_static("https://Example.COM./x")
    assert (target.host, target.port, target.address) == ("example.com", 443, None)


def test_resolver_gets_the_normalized_name_once() -> None:
    calls: list[tuple[str, int]] = []

    def counting(host: str, port: int) -> list[str]:
        calls.append((host, port))
        return ["93.184.215.14"]

    check_url("https://EXAMPLE.com./", resolver=counting)
    assert calls == [("example.com", 443)]


def test_numeric_hosts_are_not_resolved() -> None:
    assert resolve_checked(host="134744072", port=80, resolver=no_dns) == ["8.8.8.8"]


# --- host parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize(("host", "address"), [
    ("127.1", "127.0.0.1"), ("2130706433", "127.0.0.1"), ("0x7f000001", "127.0.0.1"),
    ("017700000001", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"), ("0x7f.0.0.1", "127.0.0.1"),
    ("10.1", "10.0.0.1"), ("192.168.257", "192.168.1.1"), ("0x", "0.0.0.0"), ("0", "0.0.0.0"),
    ("::ffff:127.0.0.1", "::ffff:7f00:1"), ("example.com", None), ("0x7f.example", None),
])
def test_parse_numeric_host(host: str, address: str | None) -> None:
    parsed = parse_numeric_host(host)
    assert (str(parsed) if parsed is not None else None) == address


@pytest.mark.parametrize(("host", "normal"), [
    ("Example.COM.", "example.com"), ("bücher.de", "xn--bcher-kva.de"), ("ＥＸＡＭＰＬＥ.com", "example.com"),
    ("[::1]", "::1"), ("a_b.example.com", "a_b.example.com"),
])
def test_normalize_host(host: str, normal: str) -> None:
    assert normalize_host(host) == normal


@pytest.mark.parametrize("host", ["example.com\n", "127.0.0.1\n", "0x7f000001\n"])
def test_a_host_with_a_final_line_break_is_no_host(host: str) -> None:
    """Before, a pattern's ``$`` matched before a final line break: ``127.0.0.1\\n`` parsed as the
    address and ``example.com\\n`` passed as a name (never equal to a listed one)."""
    assert parse_numeric_host(host) is None
    with pytest.raises(SSRFBlocked) as refused:
        normalize_host(host)
    assert refused.value.extra["rule"] == "invalid-host"


@pytest.mark.parametrize(("address", "rule"), [
    # near the top of each range, clear of the more specific rows that start at the bottom
    (str(entry.network[-2] if entry.network.num_addresses > 2 else entry.network[0]), entry.rule)
    for entry in BLOCKED_NETWORKS
])
def test_every_table_row_refuses_its_own_network(address: str, rule: str) -> None:
    verdict = blocked_reason(ipaddress.ip_address(address))
    assert verdict is not None
    if rule != "reserved":  # the /1../3 catch-alls start where more specific rows live
        assert verdict.rule == rule


# --- the allowlist -------------------------------------------------------------------------------


def test_address_port_entry_opens_that_port_only(settings) -> None:
    settings.AOB_HTTP_ALLOWLIST = ["127.0.0.1:8765"]
    assert check_url("http://127.0.0.1:8765/", resolver=no_dns).allowed_by == "127.0.0.1:8765"
    for url in ("http://127.0.0.1/", "http://127.0.0.1:8766/", "http://127.0.0.2:8765/", "http://[::1]:8765/"):
        with pytest.raises(SSRFBlocked):
            check_url(url, resolver=no_dns)


def test_address_port_entry_opens_a_name_resolving_there(settings) -> None:
    settings.AOB_HTTP_ALLOWLIST = ["127.0.0.1:8765"]
    assert check_url("http://rebind.example:8765/", resolver=stub_resolver).addresses == ("127.0.0.1",)
    with pytest.raises(SSRFBlocked, match="port 8765"):  # a public name does not gain the port
        check_url("http://example.com:8765/", resolver=stub_resolver)


def test_cidr_entry_opens_allowed_ports_only(settings) -> None:
    settings.AOB_HTTP_ALLOWLIST = ["10.0.0.0/8"]
    assert check_url("http://10.1.2.3/", resolver=no_dns).allowed_by == "10.0.0.0/8"
    assert check_url("http://internal.example.com/", resolver=stub_resolver).addresses == ("10.1.2.3",)
    with pytest.raises(SSRFBlocked) as caught:
        check_url("http://10.1.2.3:8080/", resolver=no_dns)
    assert caught.value.rule == "private"
    with pytest.raises(SSRFBlocked):
        check_url("http://172.16.0.1/", resolver=no_dns)


def test_name_entry_opens_the_name_whatever_it_resolves_to(settings) -> None:
    settings.AOB_HTTP_ALLOWLIST = ["internal.corp", "*.svc.corp", "localhost:8765"]
    assert check_url("http://INTERNAL.corp./", resolver=stub_resolver).addresses == ("10.9.8.7",)
    assert check_url("http://api.svc.corp/", resolver=stub_resolver).addresses == ("10.9.8.8",)
    assert check_url("http://localhost:8765/", resolver=lambda h, p: ["127.0.0.1"]).allowed_by == "localhost:8765"
    with pytest.raises(SSRFBlocked, match="port 8080"):
        check_url("http://internal.corp:8080/", resolver=stub_resolver)
    with pytest.raises(SSRFBlocked, match="blocked name"):
        check_url("http://localhost/", resolver=stub_resolver)
    with pytest.raises(SSRFBlocked):  # the wildcard covers subdomains, not the apex
        check_url("http://svc.corp/", resolver=lambda h, p: ["10.0.0.1"])


def test_name_entry_never_opens_cloud_metadata(settings) -> None:
    settings.AOB_HTTP_ALLOWLIST = ["evil.corp"]
    with pytest.raises(SSRFBlocked) as caught:
        check_url("http://evil.corp/", resolver=stub_resolver)
    assert caught.value.rule == "cloud-metadata"


def test_name_entry_with_port(settings) -> None:
    settings.AOB_HTTP_ALLOWLIST = ["internal.corp:8080"]
    assert check_url("http://internal.corp:8080/", resolver=stub_resolver).addresses == ("10.9.8.7",)
    with pytest.raises(SSRFBlocked):
        check_url("http://internal.corp/", resolver=stub_resolver)


def test_ipv6_entries(settings) -> None:
    settings.AOB_HTTP_ALLOWLIST = ["[::1]:8765", "fd00::/8"]
    assert check_url("http://[::1]:8765/", resolver=no_dns).allowed_by == "[::1]:8765"
    assert check_url("http://[fd12::1]/", resolver=no_dns).allowed_by == "fd00::/8"
    with pytest.raises(SSRFBlocked):
        check_url("http://[::1]/", resolver=no_dns)


def test_cidr_entries_with_a_port(settings) -> None:
    settings.AOB_HTTP_ALLOWLIST = ["10.20.0.0/16:9000", "[fd00::/8]:8443"]
    assert check_url("http://10.20.1.2:9000/", resolver=no_dns).allowed_by == "10.20.0.0/16:9000"
    assert check_url("https://[fd00::7]:8443/", resolver=no_dns).allowed_by == "[fd00::/8]:8443"
    for url in ("http://10.20.1.2/", "https://[fd00::7]/", "http://10.21.0.1:9000/"):
        with pytest.raises(SSRFBlocked):
            check_url(url, resolver=no_dns)


def test_allowed_ports_setting(settings) -> None:
    settings.AOB_HTTP_ALLOWED_PORTS = [80, 443, 8443]
    assert check_url("https://example.com:8443/", resolver=stub_resolver).port == 8443
    with pytest.raises(SSRFBlocked):
        check_url("https://127.0.0.1:8443/", resolver=no_dns)


@pytest.mark.parametrize("entry", ["127.0.0.1:http", "10.0.0.1/8", "[::1", "bad host", ":80", "1.2.3.4.5",
                                   "127.0.0.1:70000"])
def test_bad_allowlist_entries_fail_loudly(entry: str) -> None:
    with pytest.raises(ImproperlyConfigured):
        parse_allow_entry(entry)


def test_policy_defaults(settings) -> None:
    for name in ("AOB_HTTP_ALLOWLIST", "AOB_HTTP_ALLOWED_PORTS", "AOB_HTTP_MAX_RESPONSE_BYTES",
                 "AOB_HTTP_MAX_REDIRECTS", "AOB_HTTP_TIMEOUT_S"):
        if hasattr(settings, name):
            delattr(settings, name)
    policy = policy_from_settings()
    assert policy.allowlist == ()
    assert policy.allowed_ports == frozenset({80, 443})
    assert (policy.max_response_bytes, policy.max_redirects, policy.timeout_s) == (10 * 1024 * 1024, 5, 30.0)


def test_security_doc_lists_every_blocked_network() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "SECURITY.md").read_text()
    missing = [str(e.network) for e in BLOCKED_NETWORKS if f"`{e.network}`" not in doc]
    assert missing == []
