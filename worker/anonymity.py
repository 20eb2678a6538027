"""Anonymity rules: what a judge's echo says about a proxy.

The rules (PRODUCT.md): *transparent* when our real IP appears anywhere in
what the judge saw; *anonymous* when the real IP is hidden but the proxy
announces itself; *elite* when neither. Through a tunnel (CONNECT, SOCKS)
the proxy cannot add headers, so there only the exit IP counts.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from proxyrefresh.models import Anonymity

# Headers by which a proxy announces itself (lower case). Any header whose
# value holds our real IP is caught separately, whatever its name.
PROXY_HEADERS = frozenset(
    {
        "via",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-forwarded-server",
        "x-real-ip",
        "client-ip",
        "x-client-ip",
        "x-proxy-id",
        "x-proxy-connection",
        "proxy-connection",
        "proxy-agent",
        "x-tinyproxy",
        "x-bluecoat-via",
        "x-originating-ip",
        "x-remote-ip",
        "x-remote-addr",
        "true-client-ip",
        "cf-connecting-ip",
        "x-cache",
        "x-cache-lookup",
        "cache-control-proxy",
        "x-squid-error",
    }
)

# Headers the checker itself writes: their values are ours, not the proxy's.
# A judge reached by an address equal to our own (a judge on the worker's
# node, addressed by the node's IP) is in Host, and reveals nothing.
OUR_HEADERS = frozenset({"host"})

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_IPV4 = re.compile(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![\d.])")
_IPV6 = re.compile(r"[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:%\w+)?")


@functools.lru_cache(maxsize=4096)
def addresses_in(text: str) -> frozenset[Address]:
    """Every IP address written in ``text`` (whole tokens, so 10.0.0.1 is
    not found inside 10.0.0.11)."""
    found: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for token in _IPV4.findall(text):
        try:
            found.add(ipaddress.IPv4Address(token))
        except ValueError:
            continue
    for token in _IPV6.findall(text):
        try:
            found.add(ipaddress.IPv6Address(token.split("%")[0]))
        except ValueError:
            continue
    # IPv4-mapped IPv6 addresses name the IPv4 address too.
    for address in list(found):
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            found.add(address.ipv4_mapped)
    return frozenset(found)


@functools.lru_cache(maxsize=4096)
def _address(text: str) -> Address | str:
    """``text`` as an address (IPv4-mapped IPv6 as its IPv4), or as it is
    when it is none. Cached: a check compares the same few addresses over
    and over."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return text
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


@functools.lru_cache(maxsize=64)
def _real_set(
    real_ips: tuple[str, ...],
) -> frozenset[Address]:
    real = {ipaddress.ip_address(ip) for ip in real_ips}
    real |= {
        ip.ipv4_mapped for ip in real if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped
    }
    return frozenset(real)


@dataclass(frozen=True)
class Verdict:
    anonymity: Anonymity
    revealing_headers: list[str]
    reason: str


def classify(
    real_ips: Iterable[str],
    exit_ip: str | None,
    headers: Mapping[str, str],
    tunnel: bool,
) -> Verdict:
    """Judge one echo. ``headers`` are what the judge received through the
    proxy; ``real_ips`` are the addresses the judge saw when asked directly."""
    real = _real_set(tuple(real_ips))
    if exit_ip is not None and _address(exit_ip) in real:
        return Verdict(Anonymity.TRANSPARENT, [], f"exit IP {exit_ip} is our real IP")
    if tunnel:
        return Verdict(Anonymity.ELITE, [], "tunnel with a foreign exit IP")
    leaking = sorted(
        name
        for name, value in headers.items()
        if name.lower() not in OUR_HEADERS and addresses_in(value) & real
    )
    if leaking:
        return Verdict(Anonymity.TRANSPARENT, leaking, f"real IP in header(s) {', '.join(leaking)}")
    announcing = sorted(name for name in headers if name.lower() in PROXY_HEADERS)
    if announcing:
        return Verdict(Anonymity.ANONYMOUS, announcing, f"proxy header(s) {', '.join(announcing)}")
    return Verdict(Anonymity.ELITE, [], "no proxy headers and a foreign exit IP")
