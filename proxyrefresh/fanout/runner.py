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
from dataclasses import dataclass
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
    done: dict[int, ItemOutcome] = {}
    succeeded = 0
    attempts = 1
    if previous is not None:
        attempts = previous.attempts + 1
        if not previous.partial:
            # An earlier attempt finished; make sure it is counted and stop.
            first = await store.complete(previous)
            return Outcome(previous, DONE, first)
        done = {outcome.pos: outcome for outcome in previous.outcomes}
        succeeded = sum(outcome.ok for outcome in previous.outcomes)
    pending = [pos for pos in range(len(items)) if pos not in done]
    log.info("chunk %s: %d items, %d to do (attempt %d)", index, len(items), len(pending), attempts)

    failure: list[BaseException] = []

    async def consume() -> None:
        nonlocal succeeded
        try:
            async for local, value, ok in process([items[pos] for pos in pending]):
                pos = pending[local]
                done[pos] = ItemOutcome(pos=pos, ok=ok, value=value)
                succeeded += ok
        except Exception as exc:  # keep what was done; the caller re-raises
            failure.append(exc)

    finished_reporting = asyncio.Event()

    async def report() -> None:
        # Never cancelled mid-call: a redis-py command cancelled while it
        # waits for its reply can leave the connection stuck, so the loop is
        # told to stop and finishes the call in flight instead.
        last = (-1, -1)
        while not finished_reporting.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(finished_reporting.wait(), progress_interval)
            now = (len(done), succeeded)
            if finished_reporting.is_set() or now == last:
                continue
            try:
                await store.report_progress(index, *now)
                last = now
            except Exception as exc:  # progress is best effort; the result is not
                log.warning("chunk %s: progress not reported: %s", index, exc)

    worker = asyncio.create_task(consume())
    reporter = asyncio.create_task(report())
    stopper = asyncio.create_task(stop.wait())
    timeout = None
    if soft_deadline is not None:
        timeout = max(0.0, started + soft_deadline - time.monotonic())
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
    how = DONE if finished else TERMINATED if stop.is_set() else SOFT_DEADLINE
    left = [items[pos] for pos in range(len(items)) if pos not in done]
    result = ChunkResult(
        index=index,
        outcomes=[done[pos] for pos in sorted(done)],
        pending=left,
        processed=len(done),
        succeeded=succeeded,
        partial=bool(left),
        reason=None if how == DONE else how,
        attempts=attempts,
    )
    if how == TERMINATED or failure:
        await store.save_partial(result)
        if failure:
            raise failure[0]
        return Outcome(result, how)
    first = await store.complete(result)
    return Outcome(result, how, first)
