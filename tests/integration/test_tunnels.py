"""Tunnels opened on the check's own connection (worker/tunnel.py): SOCKS4,
SOCKS5 and CONNECT to an https target, TLS started on the tunnel, on real
proxies; and a proxy that hangs up mid-handshake is named as the proxy's
fault."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from proxyrefresh.models import Anonymity, Proxy
from proxyrefresh.pool import PoolEntry
from proxyrefresh.worker import upstream, wire
from proxyrefresh.worker.native import describe
from tests.conftest import Bed
from tests.harness.rotator import entry_for
from tests.harness.testbed import LocalProxy, free_port, which

pytestmark = pytest.mark.integration
HOST = "127.0.0.70"
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for HOST, and its key."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            *(which("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", f"/CN={HOST}"),
            *("-addext", f"subjectAltName=IP:{HOST}"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
async def https_target(
    certificate: tuple[Path, Path],
) -> AsyncIterator[tuple[str, ssl.SSLContext]]:
    """An https server with that certificate; yields its URL and a client
    context that trusts that certificate alone."""
    cert, key = certificate
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    port = free_port(HOST)
    server = await asyncio.start_server(answer, HOST, port, ssl=server_tls)
    yield f"https://{HOST}:{port}/", ssl.create_default_context(cafile=str(cert))
    server.close()
    await server.wait_closed()


@pytest.mark.parametrize("kind", ["socks5", "socks4", "connect"])
async def test_tls_through_each_kind_of_tunnel(
    bed: Bed, https_target: tuple[str, ssl.SSLContext], kind: str
) -> None:
    url, trust = https_target
    proxy = {
        "socks5": bed.testbed.microsocks("127.0.0.71").url,
        "socks4": bed.testbed.pproxy("127.0.0.72", "socks4").url,
        "connect": bed.testbed.tinyproxy_connect("127.0.0.73").url,
    }[kind]
    answer = await wire.get(Proxy.from_url(proxy), url, 3.0, tls=trust)
    assert answer.status == 204
    # A certificate nobody vouches for fails the check, as it must.
    with pytest.raises(ssl.SSLError):
        await wire.get(Proxy.from_url(proxy), url, 3.0, tls=ssl.create_default_context())


async def test_a_proxy_that_hangs_up_in_the_handshake_is_refusing() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)  # the greeting has come: read, so the close is a FIN, not a reset
        writer.close()

    port = free_port(HOST)
    server = await asyncio.start_server(hang_up, HOST, port)
    try:
        for scheme in ("socks5", "socks4", "https"):
            proxy = Proxy.from_url(f"{scheme}://{HOST}:{port}")
            with pytest.raises(wire.ClosedEarly) as caught:
                await wire.get(proxy, "http://127.0.0.2:8080/", 3.0)
            reason = describe(caught.value, 3.0)
            assert reason == "proxy refused: closed the connection during the handshake"
    finally:
        server.close()
        await server.wait_closed()


async def _relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
    """Pass bytes both ways between the client and ``host`` (a judge's HOST:PORT)."""
    name, _, port = host.rpartition(":")
    up_reader, up_writer = await asyncio.open_connection(name, int(port))

    async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
        dst.close()

    await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))


def _connect_in_pieces(judge: wire.Target, served: asyncio.Event) -> Handler:
    """A CONNECT proxy that writes its status line and its blank line apart,
    then relays to the judge (``served`` once the relay has ended)."""

    async def connect_proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        for piece in (b"HTTP/1.1 200 Connection established\r\n", b"\r\n"):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.05)
        await _relay(reader, writer, f"{judge.host}:{judge.port}")
        served.set()

    return connect_proxy


@pytest.mark.parametrize("scheme", ["https", "socks5"])
async def test_a_tunnel_reply_that_comes_in_pieces_still_opens_the_tunnel(
    bed: Bed, scheme: str
) -> None:
    """A proxy may write its reply in several segments (a CONNECT status
    line, then its blank line; a SOCKS5 reply byte by byte): the tunnel is
    open once the whole reply is in, and no byte of it is taken for the
    judge's answer."""
    judge = wire.Target.of(bed.judge)
    served = asyncio.Event()
    connect_proxy = _connect_in_pieces(judge, served)

    async def socks5_proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _version, count = await reader.readexactly(2)
        await reader.readexactly(count)
        writer.write(b"\x05\x00")
        head = await reader.readexactly(4)
        assert head[3] == 1  # an IPv4 target, as the judge's is
        await reader.readexactly(4 + 2)
        for byte in b"\x05\x00\x00\x01\x7f\x00\x00\x01\x00\x00":
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.005)
        await _relay(reader, writer, f"{judge.host}:{judge.port}")
        served.set()

    port = free_port(HOST)
    handler = connect_proxy if scheme == "https" else socks5_proxy
    server = await asyncio.start_server(handler, HOST, port)
    try:
        answer = await wire.get(Proxy.from_url(f"{scheme}://{HOST}:{port}"), bed.judge, 3.0)
        async with asyncio.timeout(3):
            await served.wait()  # the relay has ended: nothing is left running
    finally:
        server.close()
    assert answer.status == 200
    assert b'"remote_addr"' in answer.body


def _entry(url: str) -> PoolEntry:
    """The pool entry of a stub upstream at ``url``."""
    return entry_for(LocalProxy("stub", url, Anonymity.ELITE))


async def test_the_rotators_connect_tunnel_hands_on_the_targets_bytes_and_nothing_else(
    bed: Bed,
) -> None:
    """Through the rotator's upstream, the first byte a client reads from
    its tunnel is the target's: a blank line the proxy wrote apart from its
    status line is the reply's, not the target's (python-socks' client left
    it in the tunnel, ahead of the target's answer)."""
    judge = wire.Target.of(bed.judge)
    served = asyncio.Event()
    port = free_port(HOST)
    server = await asyncio.start_server(_connect_in_pieces(judge, served), HOST, port)
    try:
        reader, writer = await upstream.open_tunnel(
            _entry(f"http://{HOST}:{port}"), judge.host, judge.port, 3.0
        )
        writer.write(wire.request_bytes(judge, None, absolute=False))
        async with asyncio.timeout(3):
            answer = await reader.read()
            await served.wait()
        writer.close()
    finally:
        server.close()
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:40]


@pytest.mark.parametrize(
    ("scheme", "reply", "failure", "reason"),
    [
        ("http", b"HTTP/1.1 502 Bad Gateway\r\n\r\n", upstream.TargetUnreachable, "502 Bad"),
        ("http", b"HTTP/1.1 407 Auth\r\n\r\n", upstream.TunnelRefused, "407 Auth"),
        ("http", b"SSH-2.0-OpenSSH\r\n\r\n", upstream.TunnelRefused, "Invalid status"),
        ("http", b"HTTP/1.1 200 OK\r\n", upstream.UpstreamDown, "closed the connection"),
        ("http", b"", upstream.UpstreamDown, "timed out"),
        ("socks5", b"\x05\x05\x00\x01" + bytes(6), upstream.TargetUnreachable, "refused"),
        ("socks5", b"\x05\x02\x00\x01" + bytes(6), upstream.TunnelRefused, "not allowed"),
        ("socks5", b"\x05\x00\x00", upstream.UpstreamDown, "closed the connection"),
    ],
)
async def test_the_rotators_tunnel_failures_say_whose_they_are(
    scheme: str, reply: bytes, failure: type[Exception], reason: str
) -> None:
    """An upstream that says the target failed, refuses, speaks something
    else, hangs up inside its reply or never finishes it: each is sorted
    into the case the rotator treats differently, within the timeout."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if scheme == "socks5":
            _version, count = await reader.readexactly(2)
            await reader.readexactly(count)
            writer.write(b"\x05\x00")
            await reader.readexactly(4 + 4 + 2)  # a connect to an IPv4 address
        else:
            await reader.readuntil(b"\r\n\r\n")
        writer.write(reply)
        await writer.drain()
        if not reply:
            await reader.read()  # a reply that never comes: until the rotator gives up
        writer.close()

    with pytest.raises(failure, match=reason):
        await _tunnel_through(answer, scheme)


async def _tunnel_through(answer: Handler, scheme: str) -> None:
    """The rotator's tunnel to 127.0.0.2:80 (never reached: ``answer``
    stands in for the upstream and the target), with a 0.5 s timeout."""
    port = free_port(HOST)
    server = await asyncio.start_server(answer, HOST, port)
    try:
        async with asyncio.timeout(3):
            await upstream.open_tunnel(_entry(f"{scheme}://{HOST}:{port}"), "127.0.0.2", 80, 0.5)
    finally:
        server.close()


@pytest.mark.parametrize("scheme", ["socks5", "https"])
@pytest.mark.parametrize("target", ["http://127.0.0.2:8080/", "https://127.0.0.2:8443/"])
async def test_a_handshake_that_never_ends_costs_the_connect_timeout(
    scheme: str, target: str
) -> None:
    """A proxy that accepts and then says nothing: the check gives up at
    its connect timeout, plain target or TLS, not at its total."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the checker hangs up
        writer.close()

    port = free_port(HOST)
    server = await asyncio.start_server(silent, HOST, port)
    loop = asyncio.get_running_loop()
    try:
        started = loop.time()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(3):
                await wire.get(Proxy.from_url(f"{scheme}://{HOST}:{port}"), target, 0.3, total=3)
        assert loop.time() - started < 1.5
    finally:
        server.close()
