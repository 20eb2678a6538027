"""The pod side of a fan-out run: process one chunk, whatever happens.

A pod reads its chunk (and what an earlier attempt of the same index left),
processes the items still to do, reports progress at most every interval,
and finishes one of three ways:

- done: the result is written and the index counted once (``complete``);
- soft deadline: it stops before the pod's hard deadline, writes what it has
  with the rest listed as pending, and completes: retrying would only hit
  the same deadline, and the merge should not wait for it;
- stop requested (SIGTERM): it saves what it has *without* completing, so a
  retry of the index resumes from there instead of starting over.

It knows nothing of what the items are: ``process`` turns them into values.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from proxyrefresh.fanout.store import ChunkResult, ItemOutcome, RunStore

log = logging.getLogger(__name__)

# process(items) yields (position in items, its value, whether it succeeded).
Processor = Callable[[list[Any]], AsyncIterator[tuple[int, dict[str, Any], bool]]]

DONE = "done"
SOFT_DEADLINE = "soft deadline"
TERMINATED = "terminated"


@dataclass
class Outcome:
    result: ChunkResult
    how: str  # DONE, SOFT_DEADLINE or TERMINATED
    first_completion: bool = False


@dataclass
class ChunkWork:
    """One attempt at a chunk: its items, what is done so far (this attempt
    and the ones before), and what the processor raised, if it did."""

    index: int
    items: list[Any]
    done: dict[int, ItemOutcome] = field(default_factory=dict)
    succeeded: int = 0
    attempts: int = 1
    failure: list[BaseException] = field(default_factory=list)

    @classmethod
    def resuming(cls, index: int, items: list[Any], previous: ChunkResult | None) -> ChunkWork:
        work = cls(index, items)
        if previous is not None:
            work.attempts = previous.attempts + 1
            work.done = {outcome.pos: outcome for outcome in previous.outcomes}
            work.succeeded = sum(outcome.ok for outcome in previous.outcomes)
        return work

    @property
    def pending(self) -> list[int]:
        return [pos for pos in range(len(self.items)) if pos not in self.done]

    async def consume(self, process: Processor) -> None:
        pending = self.pending
        try:
            async for local, value, ok in process([self.items[pos] for pos in pending]):
                pos = pending[local]
                self.done[pos] = ItemOutcome(pos=pos, ok=ok, value=value)
                self.succeeded += ok
        except Exception as exc:  # keep what was done; the caller re-raises
            self.failure.append(exc)

    async def report(self, store: RunStore, interval: float, finished: asyncio.Event) -> None:
        """Progress every ``interval`` while it changes. Never cancelled
        mid-call: a redis-py command cancelled while it waits for its reply
        can leave the connection stuck, so the loop is told to stop
        (``finished``) and finishes the call in flight instead."""
        last = (-1, -1)
        while not finished.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(finished.wait(), interval)
            now = (len(self.done), self.succeeded)
            if finished.is_set() or now == last:
                continue
            try:
                await store.report_progress(self.index, *now)
                last = now
            except Exception as exc:  # progress is best effort; the result is not
                log.warning("chunk %s: progress not reported: %s", self.index, exc)

    def result(self, how: str) -> ChunkResult:
        left = [self.items[pos] for pos in self.pending]
        return ChunkResult(
            index=self.index,
            outcomes=[self.done[pos] for pos in sorted(self.done)],
            pending=left,
            processed=len(self.done),
            succeeded=self.succeeded,
            partial=bool(left),
            reason=None if how == DONE else how,
            attempts=self.attempts,
        )


async def run_chunk(
    store: RunStore,
    index: int,
    process: Processor,
    *,
    soft_deadline: float | None = None,
    stop: asyncio.Event | None = None,
    progress_interval: float = 1.0,
    started: float | None = None,
) -> Outcome:
    """Process chunk ``index`` of the run behind ``store``.

    ``soft_deadline`` is in seconds from ``started`` (default: now)."""
    started = time.monotonic() if started is None else started
    stop = stop or asyncio.Event()
    items, previous = await store.read_chunk(index)
    if previous is not None and not previous.partial:
        # An earlier attempt finished; make sure it is counted and stop.
        first = await store.complete(previous)
        return Outcome(previous, DONE, first)
    work = ChunkWork.resuming(index, items, previous)
    log.info(
        "chunk %s: %d items, %d to do (attempt %d)",
        index,
        len(items),
        len(work.pending),
        work.attempts,
    )
    timeout = None
    if soft_deadline is not None:
        timeout = max(0.0, started + soft_deadline - time.monotonic())
    finished = await run_until(work, store, process, stop, timeout, progress_interval)
    how = DONE if finished else TERMINATED if stop.is_set() else SOFT_DEADLINE
    result = work.result(how)
    if how == TERMINATED or work.failure:
        await store.save_partial(result)
        if work.failure:
            raise work.failure[0]
        return Outcome(result, how)
    first = await store.complete(result)
    return Outcome(result, how, first)


async def run_until(
    work: ChunkWork,
    store: RunStore,
    process: Processor,
    stop: asyncio.Event,
    timeout: float | None,
    progress_interval: float,
) -> bool:
    """Process until done, stopped or out of time, reporting progress
    meanwhile; whether the processor got to the end."""
    finished_reporting = asyncio.Event()
    worker = asyncio.create_task(work.consume(process))
    reporter = asyncio.create_task(work.report(store, progress_interval, finished_reporting))
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({worker, stopper}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        finished = worker.done()
        finished_reporting.set()
        for task in (worker, stopper):
            task.cancel()
        for task in (worker, reporter, stopper):
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return finished
