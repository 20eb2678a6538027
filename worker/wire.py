"""One judge request through one proxy, on the wire.

A check is a single HTTP/1.1 GET, so it needs no client session, no
connection pool, no cookie jar: a plain asyncio protocol writes the request
and collects the answer. That is most of what a check used to cost. It also
makes the latency true: the protocol stamps the moment the answer's first
bytes arrive, in the event loop's own callback, instead of when the
checking coroutine is next scheduled (at a concurrency of hundreds that lag
was larger than the proxies' latency). The connect's part is the kernel's
round-trip time (TCP_INFO), not connect start to callback: in a storm of
hundreds of connects the loop reaches a finished connect tens of ms late.

- ``http``: the absolute-URI request goes to the proxy itself; no CONNECT,
  no TLS unless the judge is https (then a CONNECT tunnel, like any client).
- ``https`` (CONNECT), ``socks4``, ``socks5``: python-socks' messages
  speak the tunnel's handshake on the same connection, driven from the
  protocol's callbacks (worker/tunnel.py); the request goes through it from
  the callback that sees the tunnel open (TLS, started on it, only for an
  https judge, and then from the check's coroutine).
"""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
import struct
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from python_socks import ProxyError

from proxyrefresh.models import Protocol, Proxy
from proxyrefresh.worker.http1 import digits

if TYPE_CHECKING:
    from proxyrefresh.worker.tunnel import TunnelHandshake

USER_AGENT = "proxyrefresh-checker"
TOKEN_PARAM = "token"  # the judge echoes ?token=... back (worker/judge.py)


def basic_authorization(username: str, password: str | None) -> str:
    """A Proxy-Authorization value for these credentials."""
    raw = f"{username}:{password or ''}".encode()
    return "Basic " + base64.b64encode(raw).decode()


class NotHttp(ValueError):
    """What came back is not an HTTP answer."""


class ClosedEarly(ConnectionError):
    """The proxy closed the connection before a whole answer."""


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes
    first_byte_at: float  # perf_counter when the answer's first bytes arrived
    sent_at: float = 0.0  # perf_counter just before the request went to the kernel
    connect_seconds: float = 0.0  # one round trip to the proxy (see connect_round_trip)

    @property
    def latency(self) -> float:
        """Seconds: a round trip to the proxy plus request to first byte.
        Neither part holds the event loop's lag: the first from the kernel,
        the second between a write and a callback stamp."""
        return self.connect_seconds + (self.first_byte_at - self.sent_at)


@dataclass(frozen=True)
class Target:
    """Where a request goes: what the request line and Host header say."""

    scheme: str
    host: str
    port: int
    path: str  # path and query

    @classmethod
    def of(cls, url: str) -> Target:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        port = parts.port or (443 if scheme == "https" else 80)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        return cls(scheme, parts.hostname or "", port, path)

    def with_param(self, name: str, value: str) -> Target:
        """The same target with ``name=value`` added to its query."""
        sep = "&" if "?" in self.path else "?"
        return Target(self.scheme, self.host, self.port, f"{self.path}{sep}{name}={value}")

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


_TCP_INFO_RTT = struct.Struct("=I")  # tcpi_rtt, microseconds (linux/tcp.h)
_TCP_INFO_RTT_OFFSET = 68


def connect_round_trip(transport: Any, fallback: float) -> float:
    """The kernel's round-trip time to the peer (Linux TCP_INFO), seconds:
    measured on the handshake's packets, so no event-loop lag is in it.
    ``fallback`` (connect start to callback) where the kernel will not say."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or not hasattr(socket, "TCP_INFO"):
        return fallback
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
        (rtt,) = _TCP_INFO_RTT.unpack_from(info, _TCP_INFO_RTT_OFFSET)
    except (OSError, struct.error):
        return fallback
    return float(rtt) / 1e6 if rtt else fallback


def request_bytes(target: Target, proxy: Proxy | None, absolute: bool) -> bytes:
    """The GET; ``absolute`` (to an HTTP proxy) names the whole URL and
    carries the proxy's credentials."""
    line = f"{target.scheme}://{target.authority}{target.path}" if absolute else target.path
    head = [
        f"GET {line} HTTP/1.1",
        f"Host: {target.authority}",
        f"User-Agent: {USER_AGENT}",
        "Accept: */*",
        "Connection: close",
    ]
    if absolute and proxy is not None and proxy.username is not None:
        head.append(f"Proxy-Authorization: {basic_authorization(proxy.username, proxy.password)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")


@dataclass
class _Reader(asyncio.Protocol):
    """Collects one answer, up to ``limit`` bytes of body; first, where the
    proxy is a tunnel, it speaks the tunnel's handshake (worker/tunnel.py)."""

    limit: int
    done: asyncio.Future[Answer]
    first_byte_at: float | None = None
    connected_at: float | None = None
    sent_at: float = 0.0  # perf_counter just before the request went to the kernel
    buf: bytearray = field(default_factory=bytearray)
    transport: Any = None  # an asyncio.Transport, or uvloop's own (not a subclass)
    # While a tunnel is opened, what the proxy says is the handshake's. Once
    # it is open, ``then`` (the request) is sent from this very callback, or
    # ``opened`` wakes the check where TLS must start first.
    tunnel: TunnelHandshake | None = None
    then: bytes = b""
    opened: asyncio.Future[None] | None = None
    deadline: asyncio.TimerHandle | None = None  # the connect timeout's, for the handshake

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.connected_at = time.perf_counter()
        self.transport = transport

    def round_trip(self, started: float) -> float:
        """The connect's round trip (see connect_round_trip)."""
        return connect_round_trip(self.transport, (self.connected_at or started) - started)

    def send(self, request: bytes) -> None:
        # Stamped before the write, not after: the write wakes the proxy, which
        # on a busy machine may take our CPU and answer before we run again, and
        # a stamp taken then would leave almost nothing of its latency.
        self.sent_at = time.perf_counter()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            data = self._handshake(self.tunnel, data)
            if not data:
                return
        if self.first_byte_at is None:
            self.first_byte_at = time.perf_counter()
        self.buf += data
        try:
            answer = self._parse(final=False)
        except NotHttp as exc:
            self._finish(exc)
            return
        if answer is not None:
            self._finish(answer)

    def _handshake(self, tunnel: TunnelHandshake, data: bytes) -> bytes:
        """Feed the handshake; return what came after it (the answer's)."""
        try:
            reply = tunnel.feed(data)
        except ProxyError as exc:
            self._fail(exc)
            return b""
        if reply:
            self.transport.write(reply)
        if not tunnel.done:
            return b""
        self.tunnel = None
        if self.deadline is not None:
            self.deadline.cancel()
        if self.opened is not None:
            self.opened.set_result(None)
            return b""  # nothing may come before TLS has started
        self.send(self.then)
        return tunnel.rest

    def handshake_timed_out(self) -> None:
        if self.tunnel is not None:
            self._fail(TimeoutError())

    def _fail(self, exc: BaseException) -> None:
        """The handshake failed: tell whoever waits (the TLS start, or the answer)."""
        self.tunnel = None
        if self.opened is not None and not self.opened.done():
            self.opened.set_exception(exc)
            self.transport.close()
            return
        self._finish(exc)

    def eof_received(self) -> bool:
        if self.tunnel is not None:
            self._fail(ClosedEarly("closed the connection during the handshake"))
            return False
        self._end()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.tunnel is not None:
            self._fail(exc or ClosedEarly("closed the connection during the handshake"))
            return
        if exc is not None and not self.done.done():
            self.done.set_exception(exc)
        self._end()

    def _end(self) -> None:
        if self.done.done():
            return
        try:
            answer = self._parse(final=True)
        except NotHttp as exc:
            self._finish(exc)
            return
        self._finish(answer or ClosedEarly("closed the connection without an answer"))

    def _finish(self, outcome: Answer | BaseException) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
        if not self.done.done():
            if isinstance(outcome, BaseException):
                self.done.set_exception(outcome)
            else:
                self.done.set_result(outcome)
        if self.transport is not None:
            self.transport.close()

    def _parse(self, final: bool) -> Answer | None:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > 64 * 1024 or (final and self.buf):
                raise NotHttp("not an HTTP answer")
            return None
        head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        parts = head[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not digits(parts[1]):
            raise NotHttp("not an HTTP answer")
        headers: dict[str, str] = {}
        for line in head[1:]:
            name, sep, value = line.partition(":")
            if sep:
                key = name.strip().lower()
                value = value.strip()
                headers[key] = f"{headers[key]}, {value}" if key in headers else value
        body = bytes(self.buf[end + 4 :])
        if "chunked" in headers.get("transfer-encoding", "").lower():
            decoded = _dechunk(body)
            if decoded is None:
                if not final and len(body) <= self.limit:
                    return None
                raise ClosedEarly("closed the connection inside a chunked answer")
            body = decoded
        elif "content-length" in headers:
            length = headers["content-length"]
            want = int(length) if digits(length) else 0
            if len(body) < min(want, self.limit) and not final:
                return None
            body = body[: self.limit]
        elif not final and len(body) <= self.limit:
            return None  # read until the proxy closes
        return Answer(
            int(parts[1]),
            headers,
            body[: self.limit],
            self.first_byte_at or time.perf_counter(),
        )


def _dechunk(data: bytes) -> bytes | None:
    """A whole chunked body, or None while it is incomplete."""
    out = bytearray()
    at = 0
    while True:
        line_end = data.find(b"\r\n", at)
        if line_end < 0:
            return None
        size_text = data[at:line_end].split(b";")[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise NotHttp("not an HTTP answer (bad chunk)") from None
        if size == 0:
            return bytes(out)
        start = line_end + 2
        if len(data) < start + size + 2:
            return None
        out += data[start : start + size]
        at = start + size + 2


async def get(
    proxy: Proxy | None,
    url: str | Target,
    connect_timeout: float,
    limit: int = 64 * 1024,
    tls: ssl.SSLContext | None = None,
    address: str | None = None,
    total: float = float("inf"),
) -> Answer:
    """GET ``url`` through ``proxy`` (None: directly, to ``address`` if
    given, else to the URL's host); the answer's ``latency`` is the
    proxy's. The caller bounds the whole with its own timeout, ``total``
    seconds: a connect timeout as long needs no timer of its own. Through a
    tunnel, the connect timeout bounds the handshake too."""
    loop = asyncio.get_running_loop()
    target = url if isinstance(url, Target) else Target.of(url)
    done: asyncio.Future[Answer] = loop.create_future()
    reader = _Reader(limit, done)
    started = time.perf_counter()
    deadline = loop.time() + connect_timeout if connect_timeout < total else None
    secure = target.scheme == "https"
    if proxy is None:
        rtt = await _open_direct(reader, target, connect_timeout, tls, address, started)
        reader.send(request_bytes(target, proxy, absolute=False))
    elif proxy.protocol is Protocol.HTTP and not secure:
        await _connect(reader, proxy, deadline)
        rtt = reader.round_trip(started)
        reader.send(request_bytes(target, proxy, absolute=True))
    else:
        rtt = await _open_tunnel(reader, proxy, target, deadline, tls, started)
    try:
        answer = await done
    finally:
        reader.transport.close()
    answer.sent_at, answer.connect_seconds = reader.sent_at, rtt
    return answer


async def _open_direct(
    reader: _Reader,
    target: Target,
    connect_timeout: float,
    tls: ssl.SSLContext | None,
    address: str | None,
    started: float,
) -> float:
    """Connect to the target itself (a judge asked without a proxy)."""
    secure = target.scheme == "https"
    context = (tls or ssl.create_default_context()) if secure else None
    async with asyncio.timeout(connect_timeout):
        await asyncio.get_running_loop().create_connection(
            lambda: reader,
            address or target.host,
            target.port,
            ssl=context,
            server_hostname=target.host if secure else None,
        )
    return reader.round_trip(started)


async def _open_tunnel(
    reader: _Reader,
    proxy: Proxy,
    target: Target,
    deadline: float | None,
    tls: ssl.SSLContext | None,
    started: float,
) -> float:
    """Connect to the proxy and open a tunnel (CONNECT, SOCKS4/5) to the
    target; the request goes once it is open. The round trip returned is
    the connect's, not the handshake's."""
    # Imported here, not with this module: python-socks' messages take
    # about 6 ms to import, and a list of HTTP proxies needs none of them.
    from proxyrefresh.worker.tunnel import TunnelHandshake, tunnel_address

    loop = asyncio.get_running_loop()
    host = await tunnel_address(proxy, target.host)
    await _connect(reader, proxy, deadline)
    rtt = reader.round_trip(started)
    handshake = reader.tunnel = TunnelHandshake(proxy, host, target.port)
    if deadline is not None:  # the handshake's part of the connect timeout
        reader.deadline = loop.call_at(deadline, reader.handshake_timed_out)
    if target.scheme != "https":
        # The request goes from the callback that sees the tunnel open.
        reader.then = request_bytes(target, proxy, absolute=False)
        reader.transport.write(handshake.start())
        return rtt
    try:
        reader.opened = loop.create_future()
        reader.transport.write(handshake.start())
        await reader.opened
        reader.transport = await loop.start_tls(
            reader.transport,
            reader,
            tls or ssl.create_default_context(),
            server_hostname=target.host,
        )
    except BaseException:
        reader.done.cancel()  # nobody waits for an answer now: closing must not leave one
        reader.transport.close()
        raise
    reader.send(request_bytes(target, proxy, absolute=False))
    return rtt


async def _connect(reader: _Reader, proxy: Proxy, deadline: float | None) -> None:
    """Connect ``reader`` to the proxy, by ``deadline`` (loop time) if one is
    set: without one the caller's timeout bounds it already."""
    connecting = asyncio.get_running_loop().create_connection(
        lambda: reader, proxy.host, proxy.port
    )
    if deadline is None:
        await connecting
    else:
        async with asyncio.timeout_at(deadline):  # no wait_for: it costs a task
            await connecting
