"""Fetching candidate lists: retries that honour Retry-After, headers from
a Secret only where allowed, the network guard on every redirect hop, the
size cap, and errors that name the cause. Against real HTTP servers on
loopback (two addresses, so "another host" is real)."""

from __future__ import annotations

import asyncio
import http.server
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from proxyrefresh import constants as c
from proxyrefresh.api import Source
from proxyrefresh.netguard import NetworkGuard
from proxyrefresh.operator.credentials import SourceCredentials, from_secret
from proxyrefresh.operator.list_reader import Gathered
from proxyrefresh.operator.scrape import (
    FetchRules,
    LimitExceeded,
    SourceError,
    fetch,
    scrape,
    scrape_one,
)

OPEN = FetchRules(guard=NetworkGuard(enabled=False), timeout=5, retries=0, max_bytes=1000)


class Whole:
    """A body kept whole as it arrives, to compare with what was served."""

    def __init__(self) -> None:
        self.data = bytearray()

    def restart(self) -> None:
        self.data.clear()

    async def feed(self, data: bytes) -> None:
        self.data += data

    async def end(self) -> None:
        pass


async def get(url: str, rules: FetchRules, creds: SourceCredentials | None = None) -> str:
    body = Whole()
    await fetch(url, rules, body, creds)
    return body.data.decode()


@dataclass
class Hit:
    at: float
    path: str
    headers: dict[str, str] = field(default_factory=dict)


class Lists(http.server.BaseHTTPRequestHandler):
    hits: list[Hit] = []
    elsewhere = ""  # base URL of the other server, for redirects
    open_now = most_open = 0  # requests being answered at once

    def do_GET(self) -> None:
        Lists.hits.append(Hit(time.monotonic(), self.path, dict(self.headers.items())))
        if self.path == "/busy" and len([h for h in Lists.hits if h.path == "/busy"]) == 1:
            self.send_response(429)
            self.send_header("Retry-After", "2")
            self.end_headers()
            return
        if self.path == "/private" and self.headers.get("Authorization") != "Bearer s3cret":
            self.send_response(401, "Leaked DATABASE_URL=postgres://admin:hunter2@db")
            self.end_headers()
            return
        if self.path.startswith("/hop/"):
            left = int(self.path.split("/")[2])
            self.send_response(302)
            self.send_header("Location", f"/hop/{left - 1}" if left else "/busy")
            self.end_headers()
            return
        if self.path == "/away":
            self.send_response(307)
            self.send_header("Location", f"{Lists.elsewhere}/private")
            self.end_headers()
            return
        if self.path.startswith("/cut/"):  # /cut/<n>: n proxies, then the connection drops
            n = int(self.path.split("/")[2])
            body = b"".join(b"10.9.%d.%d:80\n" % (i >> 8, i & 255) for i in range(n))
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) * 2))  # half of it never comes
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            self.close_connection = True
            return
        if self.path == "/huge":
            body = b"1.2.3.4:80\n" * 10_000
        elif self.path.startswith("/list/"):  # /list/<n>: n distinct proxies, slowly
            n = int(self.path.split("/")[2].split("?")[0])
            Lists.open_now += 1
            Lists.most_open = max(Lists.most_open, Lists.open_now)
            time.sleep(0.1)
            Lists.open_now -= 1
            body = b"".join(b"10.%d.%d.%d:80\n" % (i >> 16, i >> 8 & 255, i & 255)
                            for i in range(n))  # fmt: skip
        elif self.path in ("/busy", "/private"):
            body = b"1.2.3.4:8080\n"
        else:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def serve(host: str) -> tuple[http.server.ThreadingHTTPServer, str]:
    httpd = http.server.ThreadingHTTPServer((host, 0), Lists)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://{host}:{httpd.server_address[1]}"


@pytest.fixture
def servers() -> Iterator[tuple[str, str]]:
    Lists.hits = []
    (one, first), (two, second) = serve("127.0.0.3"), serve("127.0.0.4")
    Lists.elsewhere = second
    yield first, second
    for httpd in (one, two):
        httpd.shutdown()
        httpd.server_close()


def credentials(hosts: str) -> object:
    secret = {
        "metadata": {
            "name": "list-auth",
            "labels": {c.LABEL_SOURCE_CREDENTIALS: "true"},
            "annotations": {c.ANNOTATION_ALLOWED_HOSTS: hosts},
        },
        "data": {"Authorization": "Bearer s3cret", "X-Api-Key": "k3y"},
    }
    return secret


async def test_retry_after_is_honoured(servers: tuple[str, str]) -> None:
    server, _ = servers
    rules = FetchRules(guard=NetworkGuard(enabled=False), timeout=5, retries=3, max_bytes=1000)
    assert await get(f"{server}/busy", rules) == "1.2.3.4:8080\n"
    first, second = Lists.hits
    assert second.at - first.at >= 1.9  # waited what the server asked, not the short backoff


async def test_headers_reach_only_the_allowed_host(servers: tuple[str, str]) -> None:
    server, _ = servers
    with pytest.raises(SourceError, match=r"HTTP 401 Unauthorized$") as error:
        await get(f"{server}/private", OPEN)
    assert "hunter2" not in str(error.value)  # the server's own reason phrase is not repeated
    creds = from_secret(credentials(server), f"{server}/private")  # type: ignore[arg-type]
    assert await get(f"{server}/private", OPEN, creds) == "1.2.3.4:8080\n"
    assert Lists.hits[-1].headers["X-Api-Key"] == "k3y"


async def test_a_redirect_to_another_host_carries_no_credential(servers: tuple[str, str]) -> None:
    server, other = servers
    # Even a host the Secret allows gets nothing once a redirect moved there.
    creds = from_secret(
        credentials(f"{server}, {other}"),  # type: ignore[arg-type]
        f"{server}/away",
    )
    with pytest.raises(SourceError, match="HTTP 401"):
        await get(f"{server}/away", OPEN, creds)
    away, landed = Lists.hits
    assert away.headers["Authorization"] == "Bearer s3cret"
    assert landed.path == "/private"
    assert "Authorization" not in landed.headers
    assert "X-Api-Key" not in landed.headers


async def test_the_guard_refuses_before_any_packet(servers: tuple[str, str]) -> None:
    server, other = servers
    guard = NetworkGuard()
    with pytest.raises(SourceError, match=r"refused: 127\.0\.0\.3 is a loopback address"):
        await get(f"{server}/busy", FetchRules(guard=guard, timeout=5, retries=3))
    # Allowed first host, redirect to a loopback address that is not allowed.
    rules = FetchRules(guard=NetworkGuard.build(True, ["127.0.0.3/32"]), timeout=5, retries=2)
    with pytest.raises(SourceError, match=r"refused: 127\.0\.0\.4 is a loopback address"):
        await get(f"{server}/away", rules)
    assert [h.path for h in Lists.hits] == ["/away"]  # the second server saw nothing
    # A name is resolved and checked before connecting.
    port = other.rsplit(":", 1)[1]
    with pytest.raises(SourceError, match=r"refused: localhost \((127\.0\.0\.1|::1)\)"):
        await get(f"http://localhost:{port}/busy", rules)
    assert len(Lists.hits) == 1


async def test_redirects_are_followed_at_most_five_times(servers: tuple[str, str]) -> None:
    server, _ = servers
    rules = FetchRules(guard=NetworkGuard(enabled=False), timeout=5, retries=1, max_bytes=1000)
    assert await get(f"{server}/hop/4", rules) == "1.2.3.4:8080\n"
    with pytest.raises(SourceError, match="more than 5 redirects"):
        await get(f"{server}/hop/9", rules)


async def test_size_cap_and_errors_name_the_cause(servers: tuple[str, str]) -> None:
    server, _ = servers
    with pytest.raises(SourceError, match="larger than the cap of 1000 bytes"):
        await get(f"{server}/huge", OPEN)
    with pytest.raises(SourceError, match="HTTP 404 Not Found"):
        await get(f"{server}/nothing", OPEN)
    rules = FetchRules(guard=NetworkGuard(enabled=False), timeout=2, retries=1)
    with pytest.raises(SourceError, match="unreachable: Connection refused"):
        await get("http://127.0.0.3:1/list", rules)


async def test_a_refresh_reads_a_few_sources_at_a_time_within_its_totals(
    servers: tuple[str, str],
) -> None:
    """Twelve sources, each under its own cap: read at most three at a time;
    together past the total in bytes, or in candidates, the refresh fails
    naming the limit and its setting."""
    server, _ = servers
    Lists.open_now = Lists.most_open = 0
    sources = [Source(url=f"{server}/list/1000?{i}") for i in range(12)]  # 14 kB each
    rules = FetchRules(guard=NetworkGuard(enabled=False), timeout=5, retries=0,
                       max_bytes=20_000, total_bytes=200_000, concurrency=3)  # fmt: skip
    found = await scrape(sources, "default", rules)
    assert found.candidates == 1000  # the same thousand in each
    assert sum(s.candidates for s in found.sources) == 1000  # each counted by one source
    assert Lists.most_open == 3

    tight = FetchRules(guard=NetworkGuard(enabled=False), timeout=5, retries=0,
                       max_bytes=20_000, total_bytes=100_000, concurrency=3)  # fmt: skip
    with pytest.raises(LimitExceeded, match="more than 100000 bytes in all") as exceeded:
        await scrape(sources, "default", tight)
    assert exceeded.value.reason == "SourcesTooLarge"
    assert "PROXYREFRESH_OPERATOR_SCRAPE_MAX_BYTES" in str(exceeded.value)

    few = FetchRules(guard=NetworkGuard(enabled=False), max_bytes=30_000, max_candidates=1500)
    distinct = [Source(url=f"{server}/list/1000"), Source(inline=["192.0.2.1:80"] * 1),
                Source(url=f"{server}/list/1600")]  # fmt: skip
    with pytest.raises(LimitExceeded, match="more than 1500 candidates") as exceeded:
        await scrape(distinct, "default", few)
    assert exceeded.value.reason == "TooManyCandidates"
    assert "operator.limits.maxCandidates" in str(exceeded.value)
    # Past what Redis has room for, the scrape stops there too.
    roomless = FetchRules(guard=NetworkGuard(enabled=False), max_bytes=30_000, redis_room=500,
                          redis_full="no room")  # fmt: skip
    with pytest.raises(LimitExceeded, match=r"^no room; \d+ found so far$") as exceeded:
        await scrape(distinct, "default", roomless)
    assert exceeded.value.reason == "RedisFull"


async def test_a_big_list_gives_the_event_loop_back_while_it_parses() -> None:
    """100,000 lines take about a second to parse; meanwhile the loop, which
    every other refresh and kopf share, keeps running."""
    lines = [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}:8080" for i in range(100_000)]
    rules = FetchRules(guard=NetworkGuard())
    gaps: list[float] = []
    done = asyncio.Event()

    async def tick() -> None:
        last = time.monotonic()
        while not done.is_set():
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    started = time.monotonic()
    sink = Gathered()
    status = await scrape_one(Source(inline=lines), "default", rules, None, sink)
    took = time.monotonic() - started
    done.set()
    await ticker
    assert status.ok
    assert status.candidates == sink.count == len(sink.candidates) == 100_000
    assert max(gaps) < max(0.25, took / 3), (took, max(gaps))


async def test_a_list_cut_off_keeps_what_arrived_and_says_why(servers: tuple[str, str]) -> None:
    """A download that drops halfway, twice: the source fails naming the
    cause, and the proxies that did arrive stay, each counted once."""
    server, _ = servers
    rules = FetchRules(guard=NetworkGuard(enabled=False), timeout=5, retries=1, backoff=0.01)
    sink = Gathered()
    status = await scrape_one(Source(url=f"{server}/cut/3000"), "default", rules, None, sink)
    assert not status.ok
    assert status.message.startswith("unreachable:"), status.message
    assert status.candidates == sink.count == 3000
    assert len([h for h in Lists.hits if h.path == "/cut/3000"]) == 2
