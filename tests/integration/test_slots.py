"""The slots that let a Job run pods ahead (fanout.slots), on a real redis-server."""

from __future__ import annotations

import asyncio
import time
import uuid

from redis.asyncio import Redis

from proxyrefresh.constants import RUNS
from proxyrefresh.fanout.slots import Slots


def slots(redis: Redis, count: int, lease: float = 10.0) -> Slots:
    return Slots(redis, RUNS.keys(uuid.uuid4().hex), count, lease=lease)


async def test_at_most_count_work_at_once_and_a_waiter_takes_a_freed_slot_at_once(
    redis: Redis,
) -> None:
    gate = slots(redis, 2)
    stop = asyncio.Event()
    at_work: set[int] = set()
    most = 0
    taken: dict[int, float] = {}
    freed: list[float] = []

    async def pod(index: int) -> bool:
        nonlocal most
        async with gate.held(index, stop, wait_limit=30) as slot:
            taken[index] = time.monotonic()
            at_work.add(index)
            most = max(most, len(at_work))
            await asyncio.sleep(0.3)
            at_work.discard(index)
        freed.append(time.monotonic())
        return slot

    got = await asyncio.gather(*(pod(i) for i in range(5)))
    assert most == 2
    assert got == [True] * 5
    assert await redis.zcard(gate.keys.slots) == 0  # all freed
    # Each later pod took its slot within a poll or two of one being freed.
    later = sorted(taken.values())[2:]
    gaps = [min(t - f for f in freed if f <= t) for t in later]
    assert max(gaps) < 0.25, gaps


async def test_a_dead_pods_slot_is_free_when_its_lease_runs_out(redis: Redis) -> None:
    gate = slots(redis, 1, lease=0.6)
    assert await gate.take("dead")  # taken, then never renewed nor freed
    began = time.monotonic()
    async with gate.held(7, asyncio.Event(), wait_limit=30) as slot:
        waited = time.monotonic() - began
    assert slot
    assert 0.4 < waited < 2.0, waited


async def test_a_held_slot_outlives_its_lease(redis: Redis) -> None:
    gate = slots(redis, 1, lease=0.3)
    stop = asyncio.Event()
    released = asyncio.Event()

    async def holder() -> None:
        async with gate.held(0, stop, wait_limit=30):
            await asyncio.sleep(1.2)  # four leases long
        released.set()

    async def waiter() -> bool:
        await asyncio.sleep(0.1)
        async with gate.held(1, stop, wait_limit=30) as slot:
            return slot and released.is_set()

    _, waited_for_release = await asyncio.gather(holder(), waiter())
    assert await redis.pttl(gate.keys.slots) == -2  # gone with the last lease
    assert waited_for_release


async def test_a_pod_that_waited_too_long_goes_ahead_and_stop_ends_a_wait(redis: Redis) -> None:
    gate = slots(redis, 1)
    stop = asyncio.Event()
    async with gate.held(0, stop, wait_limit=30) as first:
        assert first
        began = time.monotonic()
        async with gate.held(1, stop, wait_limit=0.4) as late:
            assert late is False
            assert 0.35 < time.monotonic() - began < 1.5
        asyncio.get_running_loop().call_later(0.2, stop.set)
        began = time.monotonic()
        async with gate.held(2, stop, wait_limit=30) as stopped:
            assert stopped is False
            assert time.monotonic() - began < 0.6
    # The first one's slot is free again for whoever comes next.
    async with gate.held(3, asyncio.Event(), wait_limit=0.1) as again:
        assert again


async def test_a_waiting_pod_costs_the_same_however_many_slots(redis: Redis) -> None:
    """A Redis shared by many runs: a poll is one script call, not one
    call per slot (Redis counts the script's own commands too)."""

    async def commands_while_waiting(count: int) -> int:
        gate = slots(redis, count)
        for holder in range(count):
            assert await gate.take(f"holder-{holder}")
        before = int((await redis.info("stats"))["total_commands_processed"])
        async with gate.held(99, asyncio.Event(), wait_limit=0.5) as slot:
            assert slot is False  # every slot held for the whole wait
        return int((await redis.info("stats"))["total_commands_processed"]) - before

    few, many = await commands_while_waiting(2), await commands_while_waiting(50)
    assert many <= few * 1.5 + 10, (few, many)
