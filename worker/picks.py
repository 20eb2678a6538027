"""Picks drawn ahead, in batches, for the rotator.

A pick is a script call on Redis; one per request made Redis the rotator's
bottleneck (the profile showed its client's packing and parsing on top).
So picks for a filter are drawn ahead in one call and handed out in order,
each request taking the next. The batch grows while requests wait for one
and shrinks while picks go stale unused, so a quiet listener draws one at
a time and a busy one about what it uses in ``ahead_seconds``. A pick older
than that is not used: its proxy may have left the pool since.

Concurrent requests share one draw per filter: none starts a second while
one is on its way.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from proxyrefresh.pool import PickFilter, PoolEntry

Draw = Callable[[PickFilter, int], Awaitable[list[PoolEntry]]]
MAX_BATCH = 256


@dataclass
class _Ahead:
    """The picks drawn ahead for one filter."""

    waiting: deque[tuple[PoolEntry, float]] = field(default_factory=deque)
    batch: int = 1
    drawing: asyncio.Future[None] | None = None
    starved: bool = False  # a request waited since the last draw began


class Picks:
    def __init__(
        self,
        draw: Draw,
        ahead_seconds: float = 1.0,
        max_filters: int = 64,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._draw, self.ahead_seconds, self.max_filters = draw, ahead_seconds, max_filters
        self.clock = clock
        self._ahead: dict[PickFilter, _Ahead] = {}
        self.draws = 0  # script calls made (the bench and /healthz count them)

    async def next(self, flt: PickFilter) -> PoolEntry:
        """The next pick for ``flt``; NoMatch or RedisError as the draw raised them."""
        ahead = self._for(flt)
        while (entry := self._take(flt, ahead)) is None:
            await asyncio.shield(self._start(flt, ahead))
        return entry

    def ready(self, flt: PickFilter) -> PoolEntry | None:
        """The next pick for ``flt`` if one is waiting, fresh, now (no
        draw, no wait): what the relay sends a request at once with. None
        counts as a request that waited (the batch grows) and starts a draw."""
        ahead = self._for(flt)
        entry = self._take(flt, ahead)
        if entry is None:
            self._start(flt, ahead)
        return entry

    def _take(self, flt: PickFilter, ahead: _Ahead) -> PoolEntry | None:
        """The next fresh pick waiting, the next batch started before it is
        wanted; None (the filter starved) if none waits."""
        self._drop_stale(ahead)
        if not ahead.waiting:
            ahead.starved = True
            return None
        entry, _ = ahead.waiting.popleft()
        if len(ahead.waiting) <= ahead.batch // 2:
            self._start(flt, ahead)
        return entry

    def give_back(self, flt: PickFilter, entry: PoolEntry) -> None:
        """A pick from :meth:`ready` that was not used: the next one again."""
        ahead = self._ahead.get(flt)
        if ahead is not None:
            ahead.waiting.appendleft((entry, self.clock()))

    def _for(self, flt: PickFilter) -> _Ahead:
        ahead = self._ahead.get(flt)
        if ahead is None:
            while len(self._ahead) >= self.max_filters:  # the oldest filter goes
                self._ahead.pop(next(iter(self._ahead)))
            ahead = self._ahead[flt] = _Ahead()
        return ahead

    def _drop_stale(self, ahead: _Ahead) -> None:
        oldest = self.clock() - self.ahead_seconds
        stale = False
        while ahead.waiting and ahead.waiting[0][1] < oldest:
            ahead.waiting.popleft()
            stale = True
        if stale:
            ahead.batch = max(1, ahead.batch // 2)

    def _start(self, flt: PickFilter, ahead: _Ahead) -> asyncio.Future[None]:
        if ahead.drawing is None:
            if ahead.starved:
                ahead.batch = min(MAX_BATCH, ahead.batch * 2)
            ahead.starved = False
            ahead.drawing = asyncio.ensure_future(self._fill(flt, ahead))
            ahead.drawing.add_done_callback(_retrieved)
        return ahead.drawing

    async def _fill(self, flt: PickFilter, ahead: _Ahead) -> None:
        try:
            self.draws += 1
            entries = await self._draw(flt, ahead.batch)
            now = self.clock()
            ahead.waiting.extend((entry, now) for entry in entries)
        finally:
            ahead.drawing = None


def _retrieved(future: asyncio.Future[None]) -> None:
    """A draw's failure is seen by the requests that waited for it; one
    drawn ahead that nobody waited for fails quietly (it is drawn again)."""
    if not future.cancelled():
        future.exception()
