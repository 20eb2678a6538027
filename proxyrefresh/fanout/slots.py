"""At most N chunks of a run at work at once, with pods started ahead.

Every wave of pods pays a turn-around that has nothing to do with the work:
the Job controller batches pod events for a second before it creates the
next pod, and the new pod starts a process, imports, finds its servers and
connects. With small chunks that is paid once a chunk (twenty-five waves of
5 s chunks lost a third of the run to it). So the Job may run more pods than
the run's parallelism: the extra ones get ready and wait here, and take a
slot the moment a chunk ends; the turn-around then overlaps the work
instead of following it.

The slots are one sorted set per run: a member per holder, scored by when
its lease runs out (Redis's own clock, so pods' clocks never disagree).
Taking a slot is one script call that first drops the expired leases, so a
pod that dies frees its slot when its lease runs out, and a waiting pod
costs Redis one call a poll however many slots there are. The gate is about
pace, not correctness: a pod that waited as long as a chunk may take goes
ahead without a slot (its hard deadline has room for one wait), and a lease
lost to a stalled Redis is only logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from proxyrefresh.fanout.store import RunKeys, run_script

log = logging.getLogger(__name__)

# Set by the Job (fanout.job) when it runs more pods than chunks at work.
LEASE_SECONDS = 10.0  # how long a dead pod keeps its slot
POLL_SECONDS = 0.05  # how often a waiting pod asks for a free slot

# Both scripts: ``ms`` is Redis's clock in milliseconds, ARGV[1] the lease's.
_NOW = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local lease = tonumber(ARGV[1])
"""
# KEYS[1] the slots; ARGV: lease ms, count, token. 1 if the token holds a slot.
TAKE_SCRIPT = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms)
if not redis.call('ZSCORE', KEYS[1], ARGV[3])
    and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], ms + lease, ARGV[3])
redis.call('PEXPIRE', KEYS[1], lease * 3)
return 1
"""
)
# KEYS[1] the slots; ARGV: lease ms, token. 1 if the lease was still held.
RENEW_SCRIPT = (
    _NOW
    + """
local until_ms = redis.call('ZSCORE', KEYS[1], ARGV[2])
if not until_ms or tonumber(until_ms) <= ms then
  return 0
end
redis.call('ZADD', KEYS[1], ms + lease, ARGV[2])
redis.call('PEXPIRE', KEYS[1], lease * 3)
return 1
"""
)


@dataclass
class Slots:
    """The run's ``count`` slots, leased for ``lease`` seconds at a time."""

    redis: Redis
    keys: RunKeys
    count: int
    lease: float = LEASE_SECONDS
    poll: float = POLL_SECONDS
    _take: Any = field(init=False, repr=False)
    _renew: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._take = self.redis.register_script(TAKE_SCRIPT)
        self._renew = self.redis.register_script(RENEW_SCRIPT)

    @property
    def lease_ms(self) -> int:
        return max(1, int(self.lease * 1000))

    async def take(self, token: str) -> bool:
        """A slot for ``token`` if one is free (or it holds one already)."""
        keys, args = [self.keys.slots], [self.lease_ms, self.count, token]
        return bool(await run_script(self._take, keys, args))

    async def renew(self, token: str) -> bool:
        return bool(await run_script(self._renew, [self.keys.slots], [self.lease_ms, token]))

    async def free(self, token: str) -> None:
        await self.redis.zrem(self.keys.slots, token)

    @contextlib.asynccontextmanager
    async def held(self, index: int, stop: asyncio.Event, wait_limit: float) -> AsyncIterator[bool]:
        """Wait for a slot, hold it (renewed) for the block, free it after.

        Yields True with a slot, False when ``wait_limit`` passed first (go
        ahead anyway); at once, with False, when ``stop`` is set meanwhile."""
        token = f"{index}:{secrets.token_hex(8)}"
        given_up = time.monotonic() + wait_limit
        taken = await self.take(token)
        while not taken and not stop.is_set():
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
            taken = await self.take(token)
        if not taken:
            yield False
            return
        done = asyncio.Event()
        renewal = asyncio.create_task(self._keep(index, token, done))
        try:
            yield True
        finally:
            # Told to stop, never cancelled: a redis-py call cancelled while
            # it waits for its reply can leave the connection stuck.
            done.set()
            await renewal
            with contextlib.suppress(RedisError):
                await self.free(token)

    async def _keep(self, index: int, token: str, done: asyncio.Event) -> None:
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), self.lease / 3)
            if done.is_set():
                return
            try:
                if not await self.renew(token):
                    log.warning("chunk %s: slot lease ran out before it was renewed", index)
            except RedisError as exc:
                log.warning("chunk %s: slot lease not renewed: %s", index, exc)
