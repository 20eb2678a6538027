"""Tunnels opened on the check's own connection (wire.open_tunnel): SOCKS4,
SOCKS5 and CONNECT to an https target, TLS started on the tunnel, on real
proxies; and a proxy that hangs up mid-handshake is named as the proxy's
fault."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from proxyrefresh.models import Proxy
from proxyrefresh.worker import wire
from proxyrefresh.worker.native import describe
from tests.conftest import Bed
from tests.harness.testbed import free_port, which

pytestmark = pytest.mark.integration
HOST = "127.0.0.70"


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
