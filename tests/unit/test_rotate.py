"""The rotator's pure parts: HTTP/1.1 heads and framing, hop-by-hop fields,
what a client asks for, credentials, sessions."""

from __future__ import annotations

import base64
import functools

import pytest

from proxyrefresh.models import Anonymity, Protocol
from proxyrefresh.pool import PickFilter, PoolEntry
from proxyrefresh.worker.http1 import (
    NO_BODY,
    BadMessage,
    Framing,
    forwarded_fields,
    keeps_alive,
    parse_head,
    request_framing,
    response_framing,
)
from proxyrefresh.worker.rotate import (
    MAX_AUTHORITY,
    Refused,
    _remembered_authority,
    accepts,
    authority,
    client_ask,
    narrow,
    user_params,
)
from proxyrefresh.worker.rotate_settings import RotatorSettings
from proxyrefresh.worker.sessions import Sessions


def head(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_a_request_head_keeps_its_fields_in_order() -> None:
    h = parse_head(head("GET http://a/ HTTP/1.1", "Host: a", "X-A: 1", "x-a: 2"))
    assert h.start == ("GET", "http://a/", "HTTP/1.1")
    assert h.get("x-a") == "1, 2"
    assert h.version == "HTTP/1.1"
    assert parse_head(head("HTTP/1.0 200 OK")).version == "HTTP/1.0"


@pytest.mark.parametrize(
    "raw",
    [
        head("GET /"),
        head("GET / SPDY/3"),
        head("GET / HTTP/1.1", "no colon here"),
        head("GET / HTTP/1.1", " Host: folded"),
        head("GET / HTTP/1.1", "X-A: 1\nX-Injected: yes"),
        head("GET / HTTP/1.1", "X-A: 1\rX-Injected: yes"),
        head("GET / HTTP/1.1", "X-A: 1\x00"),
    ],
)
def test_malformed_heads_are_refused(raw: bytes) -> None:
    with pytest.raises(BadMessage):
        parse_head(raw)


def test_hop_by_hop_fields_and_the_ones_connection_names_are_not_forwarded() -> None:
    h = parse_head(
        head(
            "GET http://a/ HTTP/1.1",
            "Host: a",
            "Connection: keep-alive, X-Secret",
            "X-Secret: 1",
            "Proxy-Connection: keep-alive",
            "Keep-Alive: timeout=5",
            "Proxy-Authorization: Basic eDp5",
            "TE: trailers",
            "Upgrade: h2c",
            "X-Proxyrefresh-Session: abc",
            "Accept: */*",
        )
    )
    assert forwarded_fields(h, "x-proxyrefresh-") == [("Host", "a"), ("Accept", "*/*")]


def test_framing_follows_rfc_9112() -> None:
    req = parse_head(head("POST http://a/ HTTP/1.1", "Content-Length: 5"))
    assert request_framing(req) == Framing("length", 5)
    chunked = parse_head(head("POST http://a/ HTTP/1.1", "Transfer-Encoding: gzip, chunked"))
    assert request_framing(chunked) == Framing("chunked")
    assert request_framing(parse_head(head("GET http://a/ HTTP/1.1"))) == NO_BODY
    with pytest.raises(BadMessage):
        request_framing(parse_head(head("POST / HTTP/1.1", "Content-Length: 5, 6")))
    with pytest.raises(BadMessage):
        request_framing(parse_head(head("POST / HTTP/1.1", "Transfer-Encoding: gzip")))
    both = ("Transfer-Encoding: chunked", "Content-Length: 5")
    with pytest.raises(BadMessage, match="both Transfer-Encoding and Content-Length"):
        request_framing(parse_head(head("POST / HTTP/1.1", *both)))  # a smuggling attempt
    # An answer framed both ways is read as chunked (RFC 9112 6.3), and its
    # length goes: the client must not read the body another way.
    answer = parse_head(head("HTTP/1.1 200 OK", *both, "Server: o"))
    assert response_framing(answer, "GET") == Framing("chunked")
    assert forwarded_fields(answer) == [("Transfer-Encoding", "chunked"), ("Server", "o")]
    ok = parse_head(head("HTTP/1.1 200 OK", "Content-Length: 3"))
    assert response_framing(ok, "GET") == Framing("length", 3)
    assert response_framing(ok, "HEAD") == NO_BODY
    assert response_framing(parse_head(head("HTTP/1.1 304 Not Modified")), "GET") == NO_BODY
    assert response_framing(parse_head(head("HTTP/1.1 200 OK")), "GET") == Framing("close")


@pytest.mark.parametrize(
    ("start", "fields", "why"),
    [
        ("POST / HTTP/1.1", ["Content-Length: \xb2"], "bad Content-Length"),
        ("POST / HTTP/1.1", ["Content-Length: \xb2, \xb2"], "bad Content-Length"),
        ("HTTP/1.1 200 OK", ["Content-Length: \xb9"], "bad Content-Length"),
        ("HTTP/1.1 \xb200 OK", ["Content-Length: 2"], "bad status code"),
        ("HTTP/1.1 20 OK", [], "bad status code"),
        ("HTTP/1.1 2000 OK", [], "bad status code"),
    ],
)
def test_numbers_are_ascii_digits(start: str, fields: list[str], why: str) -> None:
    """A superscript digit (latin-1 0xb2, 0xb9) is a digit to str.isdigit
    and no number to int: a message that carries one is a BadMessage, not a
    ValueError out of a protocol callback (which left a client waiting)."""
    message = parse_head("\r\n".join([start, *fields, "", ""]).encode("latin-1"))
    framing = functools.partial(response_framing, method="GET")
    with pytest.raises(BadMessage, match=why):
        (framing if start.startswith("HTTP/") else request_framing)(message)


def test_keep_alive_by_version_and_connection() -> None:
    assert keeps_alive(parse_head(head("GET / HTTP/1.1")))
    assert not keeps_alive(parse_head(head("GET / HTTP/1.1", "Connection: close")))
    assert not keeps_alive(parse_head(head("GET / HTTP/1.0")))
    assert keeps_alive(parse_head(head("GET / HTTP/1.0", "Proxy-Connection: Keep-Alive")))


def test_user_names_carry_parameters_like_commercial_rotators() -> None:
    assert user_params("session-abc") == ("", {"session": "abc"})
    assert user_params("alice-session-abc-anonymity-elite") == (
        "alice",
        {"session": "abc", "anonymity": "elite"},
    )
    assert user_params("bob") == ("bob", {})
    assert user_params("my-team") == ("my-team", {})


def test_a_client_narrows_the_listener_never_widens_it() -> None:
    base = PickFilter(None, Anonymity.ANONYMOUS, 500)
    assert narrow(base, "socks5", "elite", "200") == PickFilter(
        Protocol.SOCKS5, Anonymity.ELITE, 200
    )
    assert narrow(base, None, "transparent", "900") == base
    with pytest.raises(ValueError, match="socks5 proxies only"):
        narrow(PickFilter(Protocol.SOCKS5), "http")
    with pytest.raises(ValueError, match="ftp"):
        narrow(base, "ftp")
    with pytest.raises(ValueError, match="positive"):
        narrow(base, None, None, "-1")


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_what_a_client_asks_comes_from_fields_or_its_user_name() -> None:
    settings = RotatorSettings(min_anonymity=Anonymity.ANONYMOUS)
    by_field = parse_head(
        head(
            "GET http://a/ HTTP/1.1",
            "X-Proxyrefresh-Protocol: SOCKS4",
            "X-Proxyrefresh-Session: s1",
        )
    )
    ask = client_ask(by_field, settings)
    assert ask.filters == PickFilter(Protocol.SOCKS4, Anonymity.ANONYMOUS, None)
    assert ask.session == "s1"
    by_user = parse_head(
        head(
            "GET http://a/ HTTP/1.1",
            "Proxy-Authorization: " + basic("session-s2-latency-300", "x"),
        )
    )
    ask = client_ask(by_user, settings)
    assert (ask.session, ask.filters.max_latency_ms) == ("s2", 300)
    with pytest.raises(Refused) as bad:
        client_ask(parse_head(head("GET / HTTP/1.1", "X-Proxyrefresh-Max-Latency-Ms: x")), settings)
    assert bad.value.status == 400


def test_credentials_are_the_configured_ones_whatever_parameters_follow() -> None:
    open_door = RotatorSettings()
    assert accepts(open_door, None)
    locked = RotatorSettings(username="alice", password="pw")
    assert not accepts(locked, None)
    assert accepts(locked, ("alice", "pw"))
    assert accepts(locked, ("alice-session-1", "pw"))
    assert not accepts(locked, ("alice", "nope"))
    assert not accepts(locked, ("mallory-session-1", "pw"))
    any_user = RotatorSettings(password="pw")
    assert accepts(any_user, ("session-9", "pw"))


def test_connect_targets() -> None:
    assert authority("example.org:8443", 443) == ("example.org", 8443)
    assert authority("[::1]:443", 443) == ("::1", 443)
    assert authority("example.org", 443) == ("example.org", 443)
    for bad in ("", ":80", "host:0", "host:99999", "host:x"):
        with pytest.raises(Refused):
            authority(bad, 443)
    # Twice, and both answers the same, remembered or not: the second from
    # memory for what a host and port can be, computed again for longer.
    long = "x" * (MAX_AUTHORITY + 1)
    for text in ("example.org:8443", "[::1]:443", long + ":1"):
        assert authority(text, 443) == authority(text, 443)
    remembered = _remembered_authority.cache_info().currsize
    for n in range(100):  # a client sending ever new long targets fills nothing
        with pytest.raises(Refused):
            authority(f"{long}{n}:x", 443)
        assert authority(f"{long}{n}", 443) == (f"{long}{n}", 443)
    assert _remembered_authority.cache_info().currsize == remembered


def entry(port: int) -> PoolEntry:
    return PoolEntry(
        proxy=f"http://127.0.0.1:{port}",
        protocol=Protocol.HTTP,
        host="127.0.0.1",
        port=port,
        anonymity=Anonymity.ELITE,
        last_checked=0,
        last_ok=0,
    )


def test_sessions_expire_drop_on_failure_and_stay_bounded() -> None:
    now = [0.0]
    sessions = Sessions(seconds=10, limit=2, clock=lambda: now[0])
    sessions.pin("a", entry(1))
    assert sessions.get("a") == entry(1)
    sessions.drop("a", entry(2))  # another upstream failing leaves it alone
    assert sessions.get("a") == entry(1)
    sessions.drop("a", entry(1))
    assert sessions.get("a") is None
    sessions.pin("a", entry(1))
    sessions.pin("b", entry(2))
    sessions.pin("c", entry(3))
    assert len(sessions) == 2
    assert sessions.get("a") is None  # the oldest went first
    now[0] = 9.9
    assert sessions.get("b") == entry(2)
    now[0] = 10.1
    assert sessions.get("b") is None


def test_a_client_s_failure_reports_are_leased_once_counted_and_rate_limited() -> None:
    """What one consumer can do to a shared pool over the JSON API: report
    only on what it was handed, once a lease, once a proxy, 3 a minute here."""
    from proxyrefresh.worker.rotate_api import Rejected, Reports

    now = [1000.0]
    reports = Reports(per_minute=3, clock=lambda: now[0])
    proxies = [f"http://127.0.0.{i}:8080" for i in range(1, 6)]
    leases = {p: reports.lease(p) for p in proxies}

    def status(client: str, proxy: str, lease: object, ok: bool = False) -> int:
        try:
            reports.admit(client, proxy, lease, ok)
        except Rejected as exc:
            return exc.status
        return 200

    assert status("a", proxies[0], None) == 400  # no lease
    assert status("a", proxies[0], leases[proxies[1]]) == 403  # another proxy's
    assert status("a", proxies[0], leases[proxies[0]]) == 200
    assert status("a", proxies[0], leases[proxies[0]]) == 409  # once a lease
    assert status("a", proxies[0], reports.lease(proxies[0])) == 429  # once a proxy
    assert status("a", proxies[1], leases[proxies[1]]) == 200
    assert status("a", proxies[2], leases[proxies[2]]) == 200
    with pytest.raises(Rejected, match="more than 3 failures a minute") as limited:
        reports.admit("a", proxies[3], leases[proxies[3]], False)
    assert (limited.value.status, limited.value.retry_after) == (429, 21)
    assert status("b", proxies[3], reports.lease(proxies[3])) == 200  # another client's own
    assert status("a", proxies[4], leases[proxies[4]], ok=True) == 200  # successes: not limited
    now[0] += 21
    assert status("a", proxies[3], leases[proxies[3]]) == 200  # the bucket refilled
    now[0] += 601
    assert status("a", proxies[3], reports.lease(proxies[3])) == 200  # a new lease, later
    assert status("a", proxies[2], leases[proxies[2]]) == 403  # that old lease expired


class FakeConnection:
    """A kept connection: open until closed, or closed by its upstream if told."""

    def __init__(self, eof: bool = False) -> None:
        self.closed, self.eof = False, eof

    def usable(self) -> bool:
        return not (self.eof or self.closed)

    def close(self) -> None:
        self.closed = True


def test_kept_upstream_connections_are_bounded_fresh_and_dropped_on_failure() -> None:
    """Issue 35: connections to upstreams are kept for the next request
    through the same upstream (and target), a few each, never stale."""
    from proxyrefresh.worker.upstream_pool import UpstreamConnections

    now = [0.0]
    kept = UpstreamConnections[FakeConnection](
        per_key=2, keys=3, idle_seconds=10, clock=lambda: now[0]
    )
    a, b, c = FakeConnection(), FakeConnection(), FakeConnection()
    for conn in (a, b, c):
        kept.give(("up1", ""), conn)
    assert a.closed  # past per_key: the oldest goes
    assert kept.take(("up1", "")) is c  # the freshest first
    assert kept.take(("up1", "other:80")) is None  # a tunnel is kept per target
    closed_meanwhile = FakeConnection(eof=True)
    kept.give(("up2", ""), closed_meanwhile)
    assert kept.take(("up2", "")) is None  # the upstream closed it: not handed out
    kept.give(("up2", ""), FakeConnection())
    now[0] = 11.0
    assert kept.take(("up2", "")) is None  # idle too long
    d = FakeConnection()
    kept.give(("up3", "t:443"), d)
    kept.give(("up3", ""), FakeConnection())
    kept.drop("up3")  # the upstream failed: all of its connections go
    assert d.closed
    assert len(kept) == 1  # b, under up1
    for upstream in ("up4", "up5"):
        kept.give((upstream, ""), FakeConnection())
    assert b.usable()
    kept.give(("up6", ""), FakeConnection())
    assert not b.usable()  # past `keys` pairs: the oldest pair goes
    assert kept.reused == 1


def test_kept_upstream_connections_are_bounded_in_all() -> None:
    """Many connections per upstream are kept (64 clients over 8 upstreams
    hold 8 each), but never more than ``total`` in all: the oldest pair's go."""
    from proxyrefresh.worker.upstream_pool import UpstreamConnections

    kept = UpstreamConnections[FakeConnection](per_key=8, keys=100, total=10)
    first = [FakeConnection() for _ in range(8)]
    for conn in first:
        kept.give(("up1", ""), conn)
    assert len(kept) == 8
    assert not any(c.closed for c in first)
    for _ in range(3):
        kept.give(("up2", ""), FakeConnection())
    assert all(c.closed for c in first)  # 11 > 10: up1's went, up2's stay
    assert len(kept) == 3
    taken = kept.take(("up2", ""))
    kept.drop("up1")
    assert taken is not None
    assert len(kept) == 2
    kept.drop("up2")
    assert len(kept) == 0


def test_picks_are_drawn_ahead_in_batches_that_follow_the_demand() -> None:
    """Issue 35: a request takes the next pick drawn ahead; concurrent
    requests share one draw; the batch doubles while requests wait for one
    and halves while picks go stale; a draw's error reaches its waiters."""
    import asyncio

    from proxyrefresh.pool import NoMatch, PickFilter
    from proxyrefresh.worker.picks import Picks
    from tests.harness.rotator import entry_for
    from tests.harness.testbed import LocalProxy

    now = [0.0]
    asked: list[int] = []
    fail = [False]

    async def draw(_: PickFilter, count: int) -> list[PoolEntry]:
        asked.append(count)
        await asyncio.sleep(0)
        if fail[0]:
            raise NoMatch("no proxy in pool")
        return [
            entry_for(LocalProxy(f"p{i}", f"http://127.0.0.1:{i + 1}", None)) for i in range(count)
        ]

    async def scenario() -> None:
        picks = Picks(draw, ahead_seconds=1.0, clock=lambda: now[0])
        flt = PickFilter()
        first = await asyncio.gather(*(picks.next(flt) for _ in range(8)))
        assert len(first) == 8
        assert len(asked) < 8  # the waiters shared draws
        assert asked == sorted(asked)  # and the batches grew while they waited
        assert asked[-1] >= 4
        grown = asked[-1]
        waiting = picks.ready(flt)  # one drawn ahead, at once
        assert waiting is not None
        picks.give_back(flt, waiting)  # not used: it is the next one again
        assert picks.ready(flt) == waiting
        assert picks.ready(PickFilter(protocol=Protocol.SOCKS5)) is None  # nothing drawn for it
        now[0] = 5.0  # everything drawn is stale now: the next draw is smaller
        assert picks.ready(flt) is None
        await picks.next(flt)
        assert asked[-1] <= grown
        fail[0] = True
        now[0] = 10.0
        with pytest.raises(NoMatch):
            await picks.next(flt)

    asyncio.run(scenario())


def test_a_body_s_end_is_found_however_its_bytes_are_cut() -> None:
    """The relay finds where an answer ends in the pieces the socket gives
    (worker/relay.py): a chunked body with an extension and a trailer, cut
    at every place, ends where it ends; a length counts down; close never ends."""
    from proxyrefresh.worker.http1 import BodyEnd

    body = b"5;ext=1\r\nhello\r\n1a\r\n" + b"z" * 26 + b"\r\n0\r\nX-T: 1\r\n\r\n"
    for cut in range(len(body) + 1):
        end = BodyEnd(Framing("chunked"))
        first = end.feed(body[:cut] if cut < len(body) else body)
        found = first if first >= 0 else cut + end.feed(body[cut:] + b"NEXT")
        assert found == len(body), cut
    length = BodyEnd(Framing("length", 10))
    assert length.feed(b"12345") == -1
    assert length.feed(b"67890NEXT") == 5
    assert BodyEnd(NO_BODY).feed(b"NEXT") == 0
    assert BodyEnd(Framing("close")).feed(b"anything") == -1


@pytest.mark.parametrize("size", [b"0x5", b"-1", b"1_0", b"+5", b"", b"g"])
def test_a_chunk_size_is_hex_digits_only(size: bytes) -> None:
    """``int(_, 16)`` takes each of these; a next hop may not read them so."""
    from proxyrefresh.worker.http1 import BodyEnd

    with pytest.raises(BadMessage, match="bad chunk size"):
        BodyEnd(Framing("chunked")).feed(size + b"\r\nhello\r\n0\r\n\r\n")
