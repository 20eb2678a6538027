"""Which addresses a fetch may reach: the guard against SSRF.

A tenant writes URLs into a spec (sources, judges, targets) and the
operator or its workers fetch them from inside the cluster. Without a
guard that is a way to reach the metadata service, the API server, Redis
and every other internal service, with the answer reflected back. So every
fetch resolves its host first, refuses any address that is not public, and
connects to exactly the addresses it checked (the resolver below is the
one aiohttp connects with, so a second DNS answer cannot swap them: no
DNS rebinding). The installer can turn the guard off or allow networks
(``NetworkSettings`` in proxyrefresh.settings).

:func:`refusal` is a pure function, unit-tested on every kind of address
without sending a packet anywhere.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from aiohttp.abc import AbstractResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
METADATA = (ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"))
UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")
# IPv6 forms that carry an IPv4 address to an IPv4 host: a translator (NAT64,
# RFC 6052's well-known prefix) or a 6to4 relay delivers to that address, so
# they are judged as it. RFC 8215's local-use NAT64 prefix leads into the
# operator's own network whatever it embeds, and the deprecated
# IPv4-compatible form (::a.b.c.d) is routed nowhere public.
NAT64 = ipaddress.ip_network("64:ff9b::/96")
NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


class AddressRefused(OSError):
    """A fetch would reach an address the guard refuses. An OSError, so
    aiohttp reports it as the connection failure it is."""


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv4-mapped, NAT64 or 6to4 address delivers to."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def kind_of(ip: IPAddress) -> str | None:
    """The kind of non-public address ``ip`` is, or None for a public one."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = embedded_ipv4(ip)
        if inner is not None:
            return kind_of(inner)
        if ip in NAT64_LOCAL:
            return "private"
        if ip in IPV4_COMPATIBLE and not (ip.is_unspecified or ip.is_loopback):
            return "reserved"
    if ip in METADATA:
        return "metadata"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv6Address) and ip in UNIQUE_LOCAL:
        return "unique-local"
    if ip.is_private:
        return "private"
    if not ip.is_global:
        return "reserved"
    return None


@dataclass(frozen=True)
class NetworkGuard:
    """The rule every fetch of a tenant's URL follows."""

    enabled: bool = True
    allowed: tuple[IPNetwork, ...] = ()
    internal: tuple[IPNetwork, ...] = ()  # the cluster's service and pod ranges

    @classmethod
    def build(
        cls, enabled: bool, allowed: Iterable[str] = (), internal: Iterable[str] = ()
    ) -> NetworkGuard:
        return cls(
            enabled,
            tuple(ipaddress.ip_network(n, strict=False) for n in allowed),
            tuple(ipaddress.ip_network(n, strict=False) for n in internal),
        )

    def refusal(self, address: str | IPAddress) -> str | None:
        """Why ``address`` may not be reached, or None if it may."""
        if not self.enabled:
            return None
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        if any(ip in net for net in self.allowed if net.version == ip.version):
            return None
        if any(ip in net for net in self.internal if net.version == ip.version):
            return "cluster-internal"
        return kind_of(ip)

    def check(self, host: str, address: str) -> None:
        """Raise AddressRefused if ``address`` (what ``host`` resolved to) is refused."""
        why = self.refusal(address)
        if why is not None:
            shown = host if host == address else f"{host} ({address})"
            raise AddressRefused(
                f"{shown} is a {why} address; fetches to it are not allowed "
                "(the installer can allow networks: network.allowedNetworks)"
            )

    def check_url(self, url: str) -> None:
        """Refuse a URL whose host is a literal refused address (aiohttp does
        not resolve literals, so the resolver below never sees them)."""
        host = urlsplit(url).hostname or ""
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return
        self.check(host, host)

    async def vet(self, url: str) -> None:
        """Resolve ``url``'s host now and raise AddressRefused if any answer
        is refused: for URLs that someone else (a proxy) will connect to."""
        if not self.enabled:
            return
        parts = urlsplit(url)
        await self.addresses(parts.hostname or "", parts.port or 0)

    async def addresses(self, host: str, port: int) -> list[str]:
        """Every address ``host`` resolves to, all of them allowed, or
        AddressRefused: connect to one of these, not to the name again (a
        second DNS answer could differ: no DNS rebinding)."""
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            self.check(host, host)
            return [host]
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        found = list(dict.fromkeys(str(info[4][0]) for info in infos))
        for address in found:
            self.check(host, address)
        return found

    def resolver(self) -> AbstractResolver:
        """An aiohttp resolver that refuses what the guard refuses (aiohttp
        is imported only here: a checker that never fetches with it starts
        without it)."""
        from aiohttp.abc import AbstractResolver as Base
        from aiohttp.abc import ResolveResult
        from aiohttp.resolver import DefaultResolver

        guard = self

        class GuardedResolver(Base):
            """Resolves as usual, then refuses the whole answer if any address
            in it is refused: aiohttp connects to what this returns, nothing else."""

            def __init__(self) -> None:
                self.inner = DefaultResolver()

            async def resolve(
                self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
            ) -> list[ResolveResult]:
                answers = await self.inner.resolve(host, port, family)
                for answer in answers:
                    guard.check(host, answer["host"])
                return answers

            async def close(self) -> None:
                await self.inner.close()

        return GuardedResolver()

    def connector_kwargs(self) -> dict[str, Any]:
        """What an aiohttp TCPConnector needs to connect only where allowed."""
        return {"resolver": self.resolver()} if self.enabled else {}
