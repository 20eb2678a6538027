"""Connections through one upstream proxy from the pool, for the rotator.

An ``http`` upstream takes absolute-URI requests on a plain connection to
itself; every protocol can open a tunnel to the target (CONNECT for http
and https, SOCKS4, SOCKS5), its handshake spoken by worker/tunnel.py, as
the checker's is, and read to the reply's end and no further: every byte
after it is the target's. (python-socks' own client read a CONNECT reply as
whatever arrived first, so a proxy that wrote its blank line apart left it
in the tunnel, ahead of the target's answer.) What went wrong is sorted
into the cases the rotator treats differently: the upstream is down
(nothing was sent: report it, try another), it answered and refused the
tunnel, or it says the target is unreachable (not the upstream's fault).
"""

from __future__ import annotations

import asyncio
from urllib.parse import unquote, urlsplit

from python_socks import ProxyError

from proxyrefresh.models import Protocol, Proxy
from proxyrefresh.pool import PoolEntry
from proxyrefresh.worker.http1 import MAX_HEAD
from proxyrefresh.worker.tunnel import TunnelHandshake, tunnel_address
from proxyrefresh.worker.wire import basic_authorization

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class UpstreamDown(ConnectionError):
    """The upstream could not be reached or did not finish its handshake."""


class TunnelRefused(ConnectionError):
    """The upstream answered, and refused to open the tunnel."""


class TargetUnreachable(ConnectionError):
    """The upstream works, and could not reach the target: not its fault."""


# Replies that say the target failed, not the proxy: SOCKS5 network or host
# unreachable, connection refused, TTL expired; SOCKS4 "rejected or failed"
# (its only failure code: a proxy that answers it is up); an HTTP proxy's
# bad gateway, unavailable, gateway timeout.
_TARGET_FAILED = {
    Protocol.SOCKS5: {3, 4, 5, 6},
    Protocol.SOCKS4: {0x5B},
    Protocol.HTTP: {502, 503, 504},
    Protocol.HTTPS: {502, 503, 504},
}


async def open_plain(entry: PoolEntry, timeout: float) -> Streams:
    """A connection to an http upstream itself (it takes absolute-URI requests)."""
    try:
        async with asyncio.timeout(timeout):
            return await asyncio.open_connection(entry.host, entry.port, limit=MAX_HEAD)
    except TimeoutError:
        raise UpstreamDown(f"connect timed out after {timeout:g}s") from None
    except OSError as exc:
        raise UpstreamDown(f"connect failed: {exc.strerror or exc}") from None


async def open_tunnel(entry: PoolEntry, host: str, port: int, timeout: float) -> Streams:
    """A byte stream to ``host:port`` through the upstream. ``timeout``
    bounds connect and handshake together."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    proxy = as_proxy(entry)
    try:
        async with asyncio.timeout_at(deadline):
            address = await tunnel_address(proxy, host)  # SOCKS4 only: the others send the name
    except (OSError, TimeoutError) as exc:
        raise TargetUnreachable(f"{host} does not resolve: {exc}") from None
    streams = await open_plain(entry, max(deadline - loop.time(), 0.0))
    reader, writer = streams
    handshake = TunnelHandshake(proxy, address, port)
    try:
        async with asyncio.timeout_at(deadline):
            writer.write(handshake.start())
            while not handshake.done:
                wanted = handshake.wanted()
                if isinstance(wanted, bytes):
                    reply = await reader.readuntil(wanted)
                else:
                    reply = await reader.readexactly(wanted)
                if sent := handshake.feed(reply):
                    writer.write(sent)
    except BaseException as exc:
        writer.close()
        failure = _tunnel_failure(entry, exc)
        if failure is None:
            raise
        raise failure from None
    return streams


def _tunnel_failure(entry: PoolEntry, exc: BaseException) -> ConnectionError | None:
    """What a failed handshake means to the rotator (None: not the
    upstream's doing, a cancellation)."""
    if isinstance(exc, ProxyError):
        if exc.error_code in _TARGET_FAILED[entry.protocol]:
            return TargetUnreachable(str(exc))
        return TunnelRefused(str(exc))
    if isinstance(exc, asyncio.LimitOverrunError):
        return TunnelRefused("CONNECT reply head too long")
    if isinstance(exc, asyncio.IncompleteReadError):
        return UpstreamDown("closed the connection during the handshake")
    if isinstance(exc, TimeoutError):
        return UpstreamDown("handshake timed out")
    if isinstance(exc, OSError):
        return UpstreamDown(f"tunnel failed: {exc.strerror or exc}")
    return None


def as_proxy(entry: PoolEntry) -> Proxy:
    """The entry as the checker's Proxy, its URL's credentials decoded."""
    parts = urlsplit(entry.proxy)
    user, password = parts.username, parts.password
    return Proxy(
        protocol=entry.protocol,
        host=entry.host,
        port=entry.port,
        username=unquote(user) if user is not None else None,
        password=unquote(password) if password is not None else None,
    )


def authorization(entry: PoolEntry) -> list[tuple[str, str]]:
    """The Proxy-Authorization an http upstream wants for its credentials."""
    if "@" not in entry.proxy:
        return []  # no credentials: nothing to decode (the rotator asks every request)
    proxy = as_proxy(entry)
    if proxy.username is None:
        return []
    return [("Proxy-Authorization", basic_authorization(proxy.username, proxy.password))]
