"""How the operator uses Redis, against a real redis-server: a bounded
number of connections however many refreshes and pools it follows."""

from __future__ import annotations

import asyncio
import json

import pytest
from redis.asyncio import Redis
from redis.exceptions import OutOfMemoryError

from proxyrefresh.constants import RUNS
from proxyrefresh.models import Proxy
from proxyrefresh.operator import memory
from proxyrefresh.operator.spool import RunSpool
from proxyrefresh.operator.subscriptions import Subscriptions
from proxyrefresh.parse import Candidates
from proxyrefresh.settings import RedisSettings
from tests.conftest import async_wait_for
from tests.harness.testbed import RedisServer

pytestmark = pytest.mark.integration


async def test_a_thousand_followers_share_one_connection(
    redis_server: RedisServer, redis: Redis
) -> None:
    """1,200 channels followed (1,000 refreshes, 200 pools) take one pub/sub
    connection; a message wakes its channel's followers and no other; a
    channel nobody follows any more is unsubscribed."""
    operator = RedisSettings(url=redis_server.url).client(max_connections=8)
    subs = Subscriptions(operator)
    channels = [f"proxyrefresh:{{run-{i}}}:events" for i in range(1200)]
    feeds = [subs.open(ch) for ch in channels]
    twin = subs.open(channels[7])  # a second follower of one channel
    try:

        async def all_subscribed() -> bool:
            counts = await redis.pubsub_numsub(channels[0], channels[-1])
            return all(n == 1 for _, n in counts)

        await async_wait_for(all_subscribed, 10, "every channel to be subscribed")
        pubsub_conns = [c for c in await redis.client_list() if int(c["sub"]) > 0]
        assert [int(c["sub"]) for c in pubsub_conns] == [1200]  # one connection holds them all

        await redis.publish(channels[7], "{}")
        assert await feeds[7].wait(5)
        assert await twin.wait(5)
        assert not any([await f.wait(0) for i, f in enumerate(feeds) if i != 7])

        for feed in feeds[:600]:
            subs.close(feed)

        async def left() -> bool:
            ((_, n),) = await redis.pubsub_numsub(channels[0])
            return n == 0

        await async_wait_for(left, 10, "a channel nobody follows to be unsubscribed")
        assert subs.channels == 601  # the twin still follows channels[7]
        ((_, n),) = await redis.pubsub_numsub(channels[7])
        assert n == 1
    finally:
        await subs.aclose()
        await operator.aclose()


async def test_commands_beyond_the_pool_wait_their_turn(
    redis_server: RedisServer, redis: Redis
) -> None:
    """More commands at once than connections: every one gets its answer
    (none fails with 'Too many connections') over at most that many."""
    before = {c["id"] for c in await redis.client_list()}
    operator = RedisSettings(url=redis_server.url).client(max_connections=4)
    try:
        answers = await asyncio.gather(
            *(operator.blpop([f"none-{i}"], timeout=0.05) for i in range(40))
        )
        assert answers == [None] * 40
        opened = [c for c in await redis.client_list() if c["id"] not in before]
        assert len(opened) == 4  # the pool's, kept open; not one per command
    finally:
        await operator.aclose()


async def test_past_the_high_water_mark_no_run_starts_and_a_refused_write_says_why(
    redis_server: RedisServer, redis: Redis
) -> None:
    """With a maxmemory nearly reached, the operator's look at Redis says
    why a run may not start; a write Redis refuses (noeviction) is known
    for what it is, not taken for Redis being away."""
    info = await redis.info("memory")
    used = int(info["used_memory"])
    try:
        await redis.config_set("maxmemory", str(used * 3 // 2))
        await redis.config_set("maxmemory-policy", "noeviction")
        full = await memory.RedisMemory(redis, high_water=0.5).above_high_water()
        assert "above the high-water mark of 50%" in full
        assert "PROXYREFRESH_OPERATOR_REDIS_HIGH_WATER" in full
        assert await memory.RedisMemory(redis, high_water=1.0).above_high_water() == ""
        roomy = memory.RedisMemory(redis, high_water=1.0)
        assert await roomy.no_room_for(10) == ""
        too_big = await roomy.no_room_for(1_000_000)
        assert "its 1000000 candidates need about 238 MiB of Redis" in too_big
        room, full = await roomy.room()
        assert room is not None
        assert 0 < room < 1_000_000
        assert f"more candidates than the {room} Redis has room for" in full
        store = RUNS.store(redis, "oom-run", ttl=60)
        with pytest.raises(OutOfMemoryError, match="maxmemory") as refused:
            await store.write_chunks([["x" * 1000] * 100] * 100)  # 10 MB
        assert memory.out_of_memory(refused.value)
        assert await store.delete() >= 0
    finally:
        await redis.config_set("maxmemory", "0")


async def test_a_scrape_spools_its_candidates_in_redis_and_redis_cuts_the_chunks(
    redis: Redis,
) -> None:
    """Candidates reach the run's spool as they are found, once each in the
    order first met, from sources read at the same time; Redis then cuts
    the spool into chunks of the size picked once their number is known,
    and the spool and its identities are gone (their room is the chunks')."""
    store = RUNS.store(redis, "spool-run", ttl=60)
    sink = RunSpool(store)
    urls = [f"http://10.2.{i // 256}.{i % 256}:80" for i in range(2500)]

    async def source(part: list[str]) -> int:
        found = Candidates()
        for url in part:
            found.add(Proxy.from_url(url))
        return await sink.add(found)

    # Three sources at once, overlapping: every candidate is counted by one.
    added = await asyncio.gather(source(urls[:1500]), source(urls[1000:]), source(urls[:10]))
    assert sum(added) == sink.count == 2500
    assert await redis.ttl(store.keys.spool) > 0
    assert await store.spool_bytes() > 0
    # A user that may not ask MEMORY (not every operator's is allowed it)
    # counts the spool as nothing, and does not fail the refresh for it.
    await redis.acl_setuser("no-memory", enabled=True, passwords=["+pw"], keys=["*"],
                            commands=["+@all", "-memory"])  # fmt: skip
    pool = redis.connection_pool.connection_kwargs
    limited = Redis(host=pool["host"], port=pool["port"], username="no-memory", password="pw")
    try:
        assert await RUNS.store(limited, "spool-run", ttl=60).spool_bytes() == 0
    finally:
        await limited.aclose()
        await redis.acl_deluser("no-memory")
    assert await store.items_written() is None  # not a run yet: no Job may start on it

    items, chunks = await store.chunk_spool(1000)
    assert (items, chunks) == (2500, 3)
    assert await store.items_written() == (2500, 3)
    assert not await redis.exists(store.keys.spool, store.keys.seen)
    got = [json.loads(await redis.hget(store.keys.chunks, str(i)) or "[]") for i in range(3)]
    assert [len(chunk) for chunk in got] == [1000, 1000, 500]
    assert {Proxy(**item).url for chunk in got for item in chunk} == set(urls)
    assert await store.delete() > 0

    # One after the other, in the order first met.
    await source(urls[5:8])
    await source(urls[:7])
    assert await store.chunk_spool(100) == (8, 1)
    (chunk,) = [json.loads(await redis.hget(store.keys.chunks, "0") or "[]")]
    assert [Proxy(**item).url for item in chunk] == urls[5:8] + urls[:5]
    assert await store.delete() > 0
