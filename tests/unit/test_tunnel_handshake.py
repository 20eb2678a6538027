"""A tunnel's handshake as bytes in, bytes out (worker/tunnel.py): what a
proxy is sent for each protocol, replies that come in pieces, credentials,
refusals named as the proxy's, and what follows the reply kept for the
tunnel. No socket: a check's protocol feeds it the same way."""

from __future__ import annotations

import pytest
from python_socks import ProxyError

from proxyrefresh.models import Protocol, Proxy
from proxyrefresh.worker.tunnel import MAX_CONNECT_REPLY, TunnelHandshake

SOCKS5_GRANTED = b"\x05\x00\x00\x01\x7f\x00\x00\x01\x1f\x90"  # bound to 127.0.0.1:8080


def proxy(protocol: Protocol, username: str | None = None, password: str | None = None) -> Proxy:
    return Proxy(
        protocol=protocol, host="127.0.0.9", port=1080, username=username, password=password
    )


def is_open(handshake: TunnelHandshake) -> bool:
    """Read through a call: mypy would keep ``done`` narrowed across feeds."""
    return handshake.done


def feed_all(handshake: TunnelHandshake, pieces: list[bytes]) -> list[bytes | None]:
    return [handshake.feed(piece) for piece in pieces]


def test_socks5_without_credentials_asks_for_no_auth_then_connects_by_name() -> None:
    handshake = TunnelHandshake(proxy(Protocol.SOCKS5), "judge.test", 80)
    assert handshake.start() == b"\x05\x01\x00"
    connect = handshake.feed(b"\x05\x00")
    assert connect == b"\x05\x01\x00\x03\x0ajudge.test\x00\x50"
    assert not is_open(handshake)
    assert handshake.feed(SOCKS5_GRANTED) is None
    assert is_open(handshake)
    assert handshake.rest == b""


def test_socks5_sends_credentials_when_the_proxy_picks_user_password() -> None:
    handshake = TunnelHandshake(proxy(Protocol.SOCKS5, "alice", "s3cret"), "127.0.0.1", 443)
    assert handshake.start() == b"\x05\x02\x00\x02"
    assert handshake.feed(b"\x05\x02") == b"\x01\x05alice\x06s3cret"
    connect = handshake.feed(b"\x01\x00")
    assert connect == b"\x05\x01\x00\x01\x7f\x00\x00\x01\x01\xbb"
    handshake.feed(SOCKS5_GRANTED)
    assert is_open(handshake)


def test_socks5_wrong_credentials_are_a_proxy_error() -> None:
    handshake = TunnelHandshake(proxy(Protocol.SOCKS5, "alice", "wrong"), "127.0.0.1", 80)
    handshake.start()
    handshake.feed(b"\x05\x02")
    with pytest.raises(ProxyError):
        handshake.feed(b"\x01\x01")


@pytest.mark.parametrize("code", [1, 2, 3, 4, 5])
def test_socks5_refusals_are_proxy_errors_with_the_proxys_code(code: int) -> None:
    handshake = TunnelHandshake(proxy(Protocol.SOCKS5), "127.0.0.1", 80)
    handshake.start()
    handshake.feed(b"\x05\x00")
    with pytest.raises(ProxyError) as refused:
        handshake.feed(bytes([5, code, 0, 1, 0, 0, 0, 0, 0, 0]))
    assert refused.value.error_code == code
    assert not is_open(handshake)


def test_a_socks5_reply_byte_by_byte_opens_once_whole_and_keeps_what_follows() -> None:
    handshake = TunnelHandshake(proxy(Protocol.SOCKS5), "127.0.0.1", 80)
    handshake.start()
    assert feed_all(handshake, [b"\x05", b"\x00"])[-1] is not None  # the connect request
    for byte in SOCKS5_GRANTED[:-1]:
        assert handshake.feed(bytes([byte])) is None
        assert not is_open(handshake)
    handshake.feed(SOCKS5_GRANTED[-1:] + b"HTTP/1.1 200")
    assert is_open(handshake)
    assert handshake.rest == b"HTTP/1.1 200"


def test_a_socks5_grant_bound_to_a_name_or_ipv6_is_read_to_its_end() -> None:
    for bound in (b"\x03\x05proxy\x00\x50", b"\x04" + bytes(16) + b"\x00\x50"):
        handshake = TunnelHandshake(proxy(Protocol.SOCKS5), "127.0.0.1", 80)
        handshake.start()
        handshake.feed(b"\x05\x00")
        handshake.feed(b"\x05\x00\x00" + bound[:-1])
        assert not is_open(handshake)
        handshake.feed(bound[-1:] + b"X")
        assert is_open(handshake)
        assert handshake.rest == b"X"


def test_socks4_sends_the_address_and_user_and_reads_its_eight_byte_grant() -> None:
    handshake = TunnelHandshake(proxy(Protocol.SOCKS4, "bob"), "127.0.0.1", 80)
    assert handshake.start() == b"\x04\x01\x00\x50\x7f\x00\x00\x01bob\x00"
    assert handshake.feed(b"\x00\x5a\x00\x00") is None
    assert not is_open(handshake)
    handshake.feed(b"\x00\x00\x00\x00")
    assert is_open(handshake)


def test_a_socks4_rejection_is_a_proxy_error() -> None:
    handshake = TunnelHandshake(proxy(Protocol.SOCKS4), "127.0.0.1", 80)
    handshake.start()
    with pytest.raises(ProxyError):
        handshake.feed(b"\x00\x5b\x00\x00\x00\x00\x00\x00")


def test_connect_carries_basic_credentials_and_opens_on_the_blank_line() -> None:
    handshake = TunnelHandshake(proxy(Protocol.HTTPS, "alice", "pw"), "judge.test", 443)
    request = handshake.start()
    assert request.startswith(b"CONNECT judge.test:443 HTTP/1.1\r\n")
    assert b"Proxy-Authorization: Basic YWxpY2U6cHc=\r\n" in request
    assert request.endswith(b"\r\n\r\n")
    handshake.feed(b"HTTP/1.1 200 Connection established\r\n")
    assert not is_open(handshake)  # the status line alone is not the whole reply
    handshake.feed(b"Via: test\r\n\r\n\x16\x03")
    assert is_open(handshake)
    assert handshake.rest == b"\x16\x03"


@pytest.mark.parametrize("status", [b"407 Proxy Authentication Required", b"403 Forbidden"])
def test_a_connect_refusal_is_a_proxy_error(status: bytes) -> None:
    handshake = TunnelHandshake(proxy(Protocol.HTTPS), "127.0.0.1", 443)
    handshake.start()
    with pytest.raises(ProxyError):
        handshake.feed(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\n\r\n")


def test_a_connect_reply_that_never_ends_its_head_is_refused_not_buffered_forever() -> None:
    handshake = TunnelHandshake(proxy(Protocol.HTTPS), "127.0.0.1", 443)
    handshake.start()
    handshake.feed(b"HTTP/1.1 200 OK\r\n")
    for _ in range(MAX_CONNECT_REPLY // 64 - 1):
        assert handshake.feed(b"X-Padding: " + b"a" * 51 + b"\r\n") is None
    with pytest.raises(ProxyError, match="too long"):
        handshake.feed(b"a" * 128)


@pytest.mark.parametrize(
    ("protocol", "replies"),
    [
        (Protocol.SOCKS5, [b"\x05\x00", b"\x05\x00\x00\x03\x05proxy\x00\x50"]),
        (Protocol.SOCKS4, [b"\x00\x5a\x00\x00\x00\x00\x00\x00"]),
        (Protocol.HTTPS, [b"HTTP/1.1 200 OK\r\nVia: x\r\n\r\n"]),
    ],
)
def test_a_stream_reader_is_told_exactly_what_to_read(
    protocol: Protocol, replies: list[bytes]
) -> None:
    """A reader of streams reads what ``wanted`` says (so many bytes, or up
    to a delimiter) and never a byte of what follows the reply."""
    handshake = TunnelHandshake(proxy(protocol), "127.0.0.1", 80)
    handshake.start()
    wire = b"".join(replies) + b"TARGET"
    while not is_open(handshake):
        wanted = handshake.wanted()
        size = wire.index(wanted) + len(wanted) if isinstance(wanted, bytes) else wanted
        piece, wire = wire[:size], wire[size:]
        handshake.feed(piece)
    assert wire == b"TARGET"
    assert handshake.rest == b""
