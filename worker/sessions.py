"""Sticky sessions for the rotator: a name to the upstream it keeps, for a while.

A session's upstream is kept in the pool's Redis (``PoolKeys.session``), so
it holds across every acceptor process of one rotator and across the
replicas behind its Service: a session's next request may reach any of
them. Each process keeps a copy of what it read for ``recheck`` seconds, so
a busy session costs Redis one read a second per process, not one a
request; another process that moved the session on (its upstream failed)
is followed within that time. Writes (a new upstream kept, a failed one
let go) leave the request's path: the answer does not wait for them.

Two processes that start the same session at the same moment may each
pick an upstream; the last to write wins, and the other follows it at its
next read.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any

from redis.exceptions import RedisError

from proxyrefresh.pool import AsyncPool, PoolEntry

log = logging.getLogger("proxyrefresh.rotate")
RECHECK_SECONDS = 1.0


class Sessions:
    """A name to the upstream it keeps, for ``seconds``, in this process:
    bounded (the oldest goes first)."""

    def __init__(
        self, seconds: float, limit: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.seconds, self.limit, self.clock = seconds, limit, clock
        self._held: OrderedDict[str, tuple[PoolEntry, float]] = OrderedDict()

    def get(self, name: str) -> PoolEntry | None:
        held = self._held.get(name)
        if held is None:
            return None
        if held[1] < self.clock():
            del self._held[name]
            return None
        return held[0]

    def pin(self, name: str, entry: PoolEntry) -> None:
        held = self._held.get(name)
        if held is not None and held[0].id == entry.id:
            return  # kept: the session's time counts from its first pick
        self._held[name] = (entry, self.clock() + self.seconds)
        self._held.move_to_end(name)
        while len(self._held) > self.limit:
            self._held.popitem(last=False)

    def drop(self, name: str, entry: PoolEntry) -> None:
        held = self._held.get(name)
        if held is not None and held[0].id == entry.id:
            del self._held[name]

    def __len__(self) -> int:
        return len(self._held)


class SharedSessions:
    """Sessions every process of the pool's rotators shares (module docstring)."""

    def __init__(
        self,
        pool: AsyncPool,
        seconds: float,
        limit: int,
        recheck: float = RECHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pool, self.seconds = pool, seconds
        self.local = Sessions(min(recheck, seconds), limit, clock)
        self._writes: set[asyncio.Task[None]] = set()

    async def get(self, name: str) -> PoolEntry | None:
        """The upstream session ``name`` keeps; RedisError if it cannot be read."""
        held = self.local.get(name)
        if held is None:
            held = await self.pool.session(name)
            if held is not None:
                self.local.pin(name, held)
        return held

    def pin(self, name: str, entry: PoolEntry) -> None:
        """Session ``name`` keeps ``entry`` (a write only when that is news)."""
        held = self.local.get(name)
        if held is not None and held.id == entry.id:
            return  # kept: the session's time counts from its first pick
        self.local.pin(name, entry)
        self._write(self.pool.hold_session(name, entry, self.seconds))

    def drop(self, name: str, entry: PoolEntry) -> None:
        """``entry`` failed: session ``name`` no longer keeps it."""
        self.local.drop(name, entry)
        self._write(self.pool.release_session(name, entry))

    def _write(self, write: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(write)
        self._writes.add(task)
        task.add_done_callback(self._written)

    def _written(self, task: asyncio.Task[None]) -> None:
        self._writes.discard(task)
        if not task.cancelled() and isinstance(task.exception(), RedisError):
            log.warning("a sticky session was not saved: %s", task.exception())

    async def flush(self) -> None:
        """Wait for the writes on their way (at shutdown, and in tests)."""
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)

    def __len__(self) -> int:
        return len(self.local)
