"""How the operator uses Redis, against a real redis-server: a bounded
number of connections however many refreshes and pools it follows."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis
from redis.exceptions import OutOfMemoryError

from proxyrefresh.constants import RUNS
from proxyrefresh.operator import memory
from proxyrefresh.operator.subscriptions import Subscriptions
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
