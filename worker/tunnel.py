"""A tunnel's handshake (CONNECT, SOCKS4, SOCKS5), driven from a protocol's callbacks.

python-socks speaks the protocols: its request and reply messages build and
read every byte (greetings, credentials, addresses, refusals as
``ReplyError``). What it does not give is a driver that needs no coroutine:
its connectors await each read, so a SOCKS5 tunnel cost a check three
wake-ups of its coroutine and a future per read. Here the check's protocol
hands each arrival to :meth:`TunnelHandshake.feed`, which answers with the
next bytes to send; the check's coroutine wakes once, for the answer.

A reply may arrive in pieces (a CONNECT status line, then its blank line):
a step waits until its whole reply is in, and what follows the reply is
the tunnel's, given back in :attr:`TunnelHandshake.rest`. A reader of
streams (the rotator's upstreams) asks :meth:`TunnelHandshake.wanted`
instead, and reads no byte past the reply. python-socks has
no public sans-I/O interface: its messages are its ``_protocols`` package,
hence the pin on its minor versions (pyproject.toml).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable

from python_socks import ProxyError
from python_socks._protocols import http, socks4, socks5
from python_socks._protocols.errors import ReplyError

from proxyrefresh.models import Protocol, Proxy

MAX_CONNECT_REPLY = 16 * 1024  # a CONNECT reply's head; more is no proxy's
HEAD_END = b"\r\n\r\n"  # where a CONNECT reply ends
# SOCKS5 reply length past its fourth byte, by address type (RFC 1928 §6).
_SOCKS5_ADDRESS = {int(socks5.AddressType.IPV4): 4 + 2, int(socks5.AddressType.IPV6): 16 + 2}

# One step: how many bytes its reply takes, as far as the bytes at hand tell
# (None: up to HEAD_END), and what to do with them (next bytes to send, or
# None when the tunnel is open).
Need = Callable[[bytes], int | None]
Take = Callable[[bytes], bytes | None]


class TunnelHandshake:
    """Opens a tunnel to ``host:port`` through ``proxy``: :meth:`start`
    gives the first bytes to send; :meth:`feed` takes what the proxy says
    and gives what to send next, until :attr:`done`. A refusal raises
    python-socks' ProxyError, as its own client does. SOCKS4 wants an IPv4
    address (resolve a name before); SOCKS5 and CONNECT let the proxy
    resolve it."""

    def __init__(self, proxy: Proxy, host: str, port: int) -> None:
        self.proxy, self.host, self.port = proxy, host, port
        self.done = False
        self.rest = b""  # what came after the handshake: the tunnel's
        self._buf = bytearray()
        self._need: Need = _nothing
        self._take: Take = _nothing_to_send

    def start(self) -> bytes:
        protocol = self.proxy.protocol
        if protocol is Protocol.SOCKS5:
            self._socks5 = socks5.Connection()  # type: ignore[no-untyped-call]
            methods = socks5.AuthMethodsRequest(self.proxy.username, self.proxy.password)
            self._step(_fixed(socks5.AuthMethodReply.SIZE), self._socks5_method)
            return self._socks5.send(methods)
        if protocol is Protocol.SOCKS4:
            self._step(_fixed(socks4.ConnectReply.SIZE), self._socks4_reply)
            return socks4.Connection().send(
                socks4.ConnectRequest(self.host, self.port, self.proxy.username)
            )
        self._step(_head, self._connect_reply)
        request = http.ConnectRequest(
            self.host, self.port, self.proxy.username, self.proxy.password
        )
        return http.Connection().send(request)

    def feed(self, data: bytes) -> bytes | None:
        """Take ``data``; return the bytes to send next, if any."""
        self._buf += data
        out = b""
        while not self.done:
            size = self._need(bytes(self._buf))
            if size is None or len(self._buf) < size:
                break
            reply = bytes(self._buf[:size])
            del self._buf[:size]
            try:
                sent = self._take(reply)
            except ReplyError as exc:
                raise ProxyError(exc, error_code=exc.error_code) from None  # type: ignore[no-untyped-call]
            if sent is None:
                self.done, self.rest = True, bytes(self._buf)
            else:
                out += sent
        return out or None

    def wanted(self) -> int | bytes:
        """What to read next for a reader that must not read past the reply:
        so many bytes more, or up to and with this delimiter."""
        size = self._need(bytes(self._buf))
        return HEAD_END if size is None else size - len(self._buf)

    def _step(self, need: Need, take: Take) -> None:
        self._need, self._take = need, take

    # --- SOCKS5: method, (credentials), connect -------------------------

    def _socks5_method(self, reply: bytes) -> bytes:
        method = self._socks5.receive(reply)
        if getattr(method, "method", None) == socks5.AuthMethod.USERNAME_PASSWORD:
            self._step(_fixed(socks5.AuthReply.SIZE), self._socks5_authenticated)
            credentials = socks5.AuthRequest(self.proxy.username or "", self.proxy.password or "")
            return self._socks5.send(credentials)
        return self._socks5_connect()

    def _socks5_authenticated(self, reply: bytes) -> bytes:
        self._socks5.receive(reply)
        return self._socks5_connect()

    def _socks5_connect(self) -> bytes:
        self._step(_socks5_reply_size, self._socks5_connected)
        return self._socks5.send(socks5.ConnectRequest(self.host, self.port))

    def _socks5_connected(self, reply: bytes) -> None:
        self._socks5.receive(reply)

    # --- SOCKS4 and CONNECT: one reply each ------------------------------

    def _socks4_reply(self, reply: bytes) -> None:
        socks4.Connection().receive(reply)

    def _connect_reply(self, reply: bytes) -> None:
        http.Connection().receive(reply)


async def tunnel_address(proxy: Proxy, host: str) -> str:
    """The target's host as the tunnel's request carries it: SOCKS5 and
    CONNECT let the proxy resolve a name; SOCKS4 carries an IPv4 address,
    so a name is resolved here (as python-socks' own SOCKS4 client does)."""
    if proxy.protocol is not Protocol.SOCKS4:
        return host
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return host
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, None, family=socket.AF_INET, type=socket.SOCK_STREAM)
    return str(infos[0][4][0])


def _fixed(size: int) -> Need:
    return lambda _buf: size


def _nothing(_buf: bytes) -> int | None:
    return None


def _nothing_to_send(_reply: bytes) -> None:
    return None


def _head(buf: bytes) -> int | None:
    """A CONNECT reply is a head: up to and with its blank line."""
    end = buf.find(HEAD_END)
    if end >= 0:
        return end + 4
    if len(buf) > MAX_CONNECT_REPLY:
        raise ProxyError("CONNECT reply head too long")  # type: ignore[no-untyped-call]
    return None


def _socks5_reply_size(buf: bytes) -> int:
    """A SOCKS5 reply's length: a refusal is read from its first three
    bytes (python-socks names it); a grant carries the bound address,
    whose type and (for a name) length come next."""
    if len(buf) < 3:
        return 3
    if buf[0] != socks5.SOCKS_VER or buf[1] != socks5.ReplyCode.SUCCEEDED or buf[2] != socks5.RSV:
        return 3
    if len(buf) < 5:
        return 5
    if buf[3] == socks5.AddressType.DOMAIN:
        return 4 + 1 + buf[4] + 2
    return 4 + _SOCKS5_ADDRESS.get(buf[3], 0)
