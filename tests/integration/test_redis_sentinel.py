"""A primary that Sentinel manages, as the common Helm charts' Redis is
(issue 34): one ``redis+sentinel://`` URL for every client; the pool keeps
working through a failover, the CLI reads it, and a bad URL is refused in
one line that says what is wrong."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from pydantic import ValidationError
from redis.exceptions import RedisError

from proxyrefresh import redact
from proxyrefresh.fanout.access import worker_url
from proxyrefresh.models import Anonymity
from proxyrefresh.operator import pool_access
from proxyrefresh.operator.kept_users import INTERVAL, KeptUser
from proxyrefresh.pool import AsyncPool, PoolEntry
from proxyrefresh.redis_topology import replicated, sentinel_target
from proxyrefresh.settings import RedisSettings
from tests.conftest import run_cli, wait_for
from tests.harness import rotator as rot
from tests.harness import testbed as tb
from tests.harness.testbed import LocalProxy, Sentinels, TlsFiles

pytestmark = pytest.mark.integration


@pytest.fixture
def sentinels() -> Iterator[Sentinels]:
    bed = tb.Testbed()
    try:
        yield Sentinels(bed)
    finally:
        bed.close()


def entry(port: int) -> PoolEntry:
    return rot.entry_for(LocalProxy(f"p{port}", f"http://127.0.0.41:{port}", Anonymity.ELITE))


def test_the_pool_follows_its_primary_through_a_failover(sentinels: Sentinels) -> None:
    """Fill a pool through the sentinels; kill the primary; the same client
    finds the promoted replica by itself (leases and reports go on, with the
    data acknowledged by the replica before the kill), and the CLI reads it."""
    pool_through_a_failover(sentinels, {})


def test_on_tls_too_the_pool_follows_its_primary_through_a_failover() -> None:
    """``rediss+sentinel://``: the sentinels, the primary and its replica on
    TLS only, verified with the CA given; the same as on plain TCP."""
    bed = tb.Testbed()
    try:
        tls = TlsFiles.make(bed.workdir / "tls")
        pool_through_a_failover(Sentinels(bed, tls=tls), {"ca_file": str(tls.ca)})
    finally:
        bed.close()


def pool_through_a_failover(sentinels: Sentinels, tls: dict[str, str]) -> None:
    settings = RedisSettings(url=sentinels.url, **tls)
    old = sentinels.primary_port()

    async def before_and_after() -> tuple[int, int, float]:
        redis = settings.client()
        pool = AsyncPool(redis, "eu", "team")
        try:
            await pool.merge("u-1", [(e.proxy, True, e) for e in map(entry, range(1, 11))], 3600)
            assert await replicated(redis, 5000) is True  # the replica has it (WAIT)
            sentinels.primary.stop()
            killed = time.monotonic()
            # The lease made during the failover lands: its retries ask the
            # sentinels again, and find the promoted replica (seconds), where
            # they used to retry the dead primary until they ran out (15 s).
            async with pool.lease() as leased:
                assert leased.port in range(1, 11)
            gap = time.monotonic() - killed
            return (await pool.stats()).size, sentinels.primary_port(), gap
        finally:
            await redis.aclose()

    size, new, gap = asyncio.run(before_and_after())
    assert size == 10
    assert new == sentinels.replica.port != old
    assert gap < 10  # here: 3.5 s
    env = {"PROXYREFRESH_REDIS_URL": sentinels.url}
    env |= {f"PROXYREFRESH_REDIS_{name.upper()}": value for name, value in tls.items()}
    stats = run_cli("pool", "stats", "eu", "-n", "team", "--json", env=env)
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["size"] == 10


def test_a_sentinel_url_without_its_service_is_refused_in_one_line() -> None:
    target = sentinel_target("redis+sentinel://u:p%40ss@10.0.0.1:26379,10.0.0.2:26379/mymaster/2")
    assert target.nodes == [("10.0.0.1", 26379), ("10.0.0.2", 26379)]
    assert (target.service, target.db, target.username, target.password) == (
        "mymaster", 2, "u", "p@ss",
    )  # fmt: skip
    # A run's workers get the same sentinels with the run's own user; logs hide passwords.
    url = "redis+sentinel://:operator@10.0.0.1:26379,10.0.0.2:26379/mymaster/0"
    worker = worker_url(url, "proxyrefresh-run-1", "s3cret")
    assert (
        worker
        == "redis+sentinel://proxyrefresh-run-1:s3cret@10.0.0.1:26379,10.0.0.2:26379/mymaster/0"
    )
    assert sentinel_target(worker).username == "proxyrefresh-run-1"
    assert "s3cret" not in redact.url(worker)
    with pytest.raises(ValidationError, match="name the service after the sentinels"):
        RedisSettings(url="redis+sentinel://127.0.0.1:26379")
    out = run_cli("pool", "stats", "eu", "-n", "team",
                  env={"PROXYREFRESH_REDIS_URL": "redis+sentinel://127.0.0.1:26379/"})  # fmt: skip
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert "name the service after the sentinels" in line


class Keeper:
    """The operator's look for a kept user, every INTERVAL seconds, on a
    thread of its own: what makes a pool's consumer again on a promoted
    replica, which never had it."""

    def __init__(self, settings: RedisSettings, user: KeptUser) -> None:
        import threading

        self.settings, self.user = settings, user
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self.run()), daemon=True)

    async def run(self) -> None:
        redis = self.settings.client(retries=0, timeout=2)
        try:
            while not self.stopping.is_set():
                with contextlib.suppress(RedisError):  # no primary yet
                    await self.user.keep(redis, "operator-key")
                await asyncio.sleep(INTERVAL)
        finally:
            await redis.aclose()


@pytest.mark.parametrize("user", ["operator's", "kept consumer"])
def test_the_rotator_answers_every_request_through_a_failover(
    sentinels: Sentinels, user: str
) -> None:
    """Issue 34: steady requests through a rotator while its primary is
    killed: every one is answered in time (success, or 503 saying the pool
    is unreachable), and it serves again by itself after the promotion,
    within 30 s also on a least-privilege user that the promoted replica
    never had, made there by the operator's look for kept users."""
    import concurrent.futures

    import requests

    bed = sentinels.bed
    upstream = bed.tinyproxy("127.0.0.44", Anonymity.ELITE)
    judge = bed.judge("127.0.0.45")
    settings = RedisSettings(url=sentinels.url)

    async def fill(proxies: list[LocalProxy]) -> None:
        redis = settings.client()
        try:
            items = [(p.url, True, rot.entry_for(p)) for p in proxies]
            await AsyncPool(redis, "served", "team").merge("u-1", items, 3600)
            await redis.execute_command("WAIT", 1, 5000)  # type: ignore[no-untyped-call]
        finally:
            await redis.aclose()

    asyncio.run(fill([upstream]))
    consumer = pool_access.user("team", "served")
    keeper = Keeper(settings, consumer)
    url = sentinels.url
    if user == "kept consumer":
        keeper.thread.start()
        wait_for(lambda: authenticates(consumer.url(url, "operator-key")), 10, "the consumer")
        url = consumer.url(url, "operator-key")
    r = rot.start(bed.workdir, url, "served", "team")

    def one() -> tuple[int, str, float]:
        started = time.monotonic()
        try:
            got = requests.get(judge, proxies={"http": r.proxy}, timeout=15)
        except requests.RequestException as exc:
            return 0, str(exc), time.monotonic() - started
        return got.status_code, got.text, time.monotonic() - started

    try:
        assert one()[0] == 200
        sentinels.primary.stop()
        killed = time.monotonic()
        answers: list[tuple[int, str, float]] = []
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            while time.monotonic() - killed < 40:
                batch = list(pool.map(lambda _: one(), range(4)))
                answers += batch
                if all(status == 200 for status, _, _ in batch) and sentinels.primary_port() == (
                    sentinels.replica.port
                ):
                    break
        recovered = time.monotonic() - killed
    finally:
        r.stop()
        keeper.stopping.set()
    seen = Counter(status for status, _, _ in answers)
    assert recovered < 30, (seen, answers[-4:])  # here: about 2.4 s, 79 answers 503 and 5 200
    for status, text, took in answers:
        assert took < 15  # none hangs past its timeout
        assert status == 200 or (status == 503 and "the pool is unreachable" in text), text


def authenticates(url: str) -> bool:
    try:
        with RedisSettings(url=url).sync_client() as redis:
            return bool(redis.ping())
    except RedisError:
        return False


def test_commands_through_the_sentinels_wait_for_a_free_connection(sentinels: Sentinels) -> None:
    """As with a plain URL (the rotator's 256-client test): 20 commands at
    once on a client allowed 2 connections all get their answer, in turn,
    instead of 18 failing with "Too many connections"."""

    async def twenty_at_once() -> list[object]:
        redis = RedisSettings(url=sentinels.url).client(max_connections=2)
        try:
            slow = [redis.blpop([f"nothing-{i}"], timeout=0.2) for i in range(20)]
            return await asyncio.gather(*slow, return_exceptions=True)
        finally:
            await redis.aclose()

    assert asyncio.run(twenty_at_once()) == [None] * 20


async def test_the_page_on_its_kept_viewer_is_ready_again_after_a_failover(
    sentinels: Sentinels,
) -> None:
    """The page's viewer user, which the promoted replica never had, is made
    there by the operator's look for kept users: /readyz says 503 naming
    Redis meanwhile and 200 again within 30 s of the kill, without a
    restart of the page."""
    from aiohttp.test_utils import TestClient, TestServer

    from proxyrefresh.front.ui import Board, make_app
    from proxyrefresh.operator.viewer_access import VIEWER

    settings = RedisSettings(url=sentinels.url)
    keeper = Keeper(settings, VIEWER)
    keeper.thread.start()
    viewer_url = VIEWER.url(sentinels.url, "operator-key")
    await asyncio.to_thread(wait_for, lambda: authenticates(viewer_url), 10, "the viewer")
    viewer = RedisSettings(url=viewer_url).client(retries=0, timeout=2)
    try:
        board = Board(viewer, ["team"], lambda namespace: ([], []))
        async with TestClient(TestServer(make_app(board))) as page:
            assert (await page.get("/readyz")).status == 200
            sentinels.primary.stop()
            killed = time.monotonic()
            seen = []
            while time.monotonic() - killed < 30:
                ready = await page.get("/readyz")
                seen.append((ready.status, await ready.text()))
                if ready.status == 200 and sentinels.primary_port() == sentinels.replica.port:
                    break
                await asyncio.sleep(0.2)
            assert seen[-1][0] == 200, seen[-3:]
            assert all(status == 200 or text.startswith("Redis: ") for status, text in seen)
    finally:
        keeper.stopping.set()
        await viewer.aclose()
