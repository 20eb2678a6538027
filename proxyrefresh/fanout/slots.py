"""At most N chunks of a run at work at once, with pods started ahead.

Every wave of pods pays a turn-around that has nothing to do with the work:
the Job controller batches pod events for a second before it creates the
next pod, and the new pod starts a process, imports, finds its servers and
connects. With small chunks that is paid once a chunk (twenty waves of 5 s
chunks lost a third of the run to it). So the Job may run more pods than the
run's parallelism: the extra ones get ready and wait here, and take a slot
the moment a chunk ends; the turn-around then overlaps the work instead of
following it.

A slot is a lease in Redis (redis-py's Lock: SET NX with an expiry and a
token, extended while held, released by a script that checks the token), so
a pod that dies frees its slot when its lease runs out, and a pod that runs
twice takes one slot at a time like any other. The gate is about pace, not
correctness: a pod that waited as long as a chunk may take without a slot
goes ahead anyway (its hard deadline has room for one wait), and a lease
lost to a stalled Redis is only logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.asyncio.lock import Lock
from redis.exceptions import LockError, RedisError

from proxyrefresh.fanout.store import RunKeys

log = logging.getLogger(__name__)

# Set by the Job (fanout.job) when it runs more pods than chunks at work.
SLOTS_ENV = "PROXYREFRESH_SLOTS"
LEASE_SECONDS = 10.0  # how long a dead pod keeps its slot
POLL_SECONDS = 0.05  # how often a waiting pod looks for a free slot


@dataclass(frozen=True)
class Slots:
    """The run's ``count`` slots, leased for ``lease`` seconds at a time."""

    redis: Redis
    keys: RunKeys
    count: int
    lease: float = LEASE_SECONDS
    poll: float = POLL_SECONDS

    async def take(self, first: int = 0) -> tuple[int, Lock] | None:
        """One free slot (trying ``first`` first, so pods spread), or None."""
        for step in range(self.count):
            slot = (first + step) % self.count
            lock = Lock(self.redis, self.keys.slot(slot), timeout=self.lease, thread_local=False)
            if await lock.acquire(blocking=False):
                return slot, lock
        return None

    @contextlib.asynccontextmanager
    async def held(
        self, index: int, stop: asyncio.Event, wait_limit: float
    ) -> AsyncIterator[int | None]:
        """Wait for a slot, hold it (renewed) for the block, free it after.

        Yields the slot, or None when ``wait_limit`` passed first; returns
        at once, yielding None, when ``stop`` is set while waiting."""
        given_up = time.monotonic() + wait_limit
        taken = await self.take(index)
        while taken is None and not stop.is_set():
            if time.monotonic() >= given_up:
                log.warning(
                    "chunk %s: no slot free after %.0fs of %d; going ahead without one",
                    index,
                    wait_limit,
                    self.count,
                )
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.poll)
            taken = await self.take(index)
        if taken is None:
            yield None
            return
        slot, lock = taken
        done = asyncio.Event()
        renewal = asyncio.create_task(self._renew(index, lock, done))
        try:
            yield slot
        finally:
            # Told to stop, never cancelled: a redis-py call cancelled while
            # it waits for its reply can leave the connection stuck.
            done.set()
            await renewal
            with contextlib.suppress(LockError, RedisError):
                await lock.release()

    async def _renew(self, index: int, lock: Lock, done: asyncio.Event) -> None:
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), self.lease / 3)
            if done.is_set():
                return
            try:
                await lock.reacquire()
            except (LockError, RedisError) as exc:
                log.warning("chunk %s: slot lease not renewed: %s", index, exc)
