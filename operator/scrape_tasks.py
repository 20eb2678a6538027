"""A refresh's scrape, running beside its loop.

A scrape can take minutes (a source that hangs, retried). Run inside a step
it kept the step open and had a timer write its progress behind the step's
back. Here it is a task of its own, and the refresh's loop wakes on its
news (a hint on the run's channel, operator/subscriptions.py) or its
heartbeat; each wake writes once what it finds: waiting for a scrape slot,
the crash guard (written before the scrape may begin), which source is
being fetched on which attempt, and at last the result.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

from proxyrefresh.operator.scrape import Attempts, ScrapeResult

Scrape = Callable[[Attempts], Awaitable[ScrapeResult]]


@dataclass
class ScrapeTask:
    """One refresh's scrape: it takes a slot, waits for the loop to write
    its guard (``guarded``), then scrapes, saying how it goes in ``attempts``."""

    attempts: Attempts = field(default_factory=Attempts)
    slot_taken: asyncio.Event = field(default_factory=asyncio.Event)
    guarded: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[ScrapeResult] | None = None

    async def run(
        self, slot: AbstractAsyncContextManager[None], scrape: Scrape, wake: Callable[[], None]
    ) -> ScrapeResult:
        try:
            async with slot:
                self.slot_taken.set()
                wake()
                await self.guarded.wait()
                return await scrape(self.attempts)
        finally:
            wake()


class ScrapeTasks:
    """The operator's running scrapes, by refresh uid (one at most each)."""

    def __init__(self) -> None:
        self._running: dict[str, ScrapeTask] = {}

    def get(self, uid: str) -> ScrapeTask | None:
        return self._running.get(uid)

    async def start(
        self,
        uid: str,
        slot: AbstractAsyncContextManager[None],
        scrape: Scrape,
        wake: Callable[[], None],
    ) -> ScrapeTask:
        """Start the scrape; it has taken its slot on return if one was free."""
        running = self._running[uid] = ScrapeTask()
        running.task = asyncio.create_task(running.run(slot, scrape, wake), name=f"scrape-{uid}")
        await asyncio.sleep(0)  # a free slot is taken at once
        return running

    def finish(self, uid: str) -> ScrapeTask | None:
        """Forget a scrape that is done (its result taken)."""
        return self._running.pop(uid, None)

    async def cancel(self, uid: str) -> None:
        """Stop a scrape (its refresh failed, ended or went); idempotent."""
        running = self._running.pop(uid, None)
        if running is not None and running.task is not None:
            running.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await running.task
