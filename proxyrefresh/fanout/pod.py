"""A fan-out pod's whole life, for any kind of run: signals, the soft
deadline, progress, Redis errors, and the exit code that tells the Job's
podFailurePolicy whether a retry can help (``fanout.exits``).

A kind brings only ``prepare``: it builds the processor (and finds whatever
servers it needs there) and raises :class:`PodFailure` with its own exit
code when it cannot. Everything else is the same for every kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.exceptions import RedisError

from proxyrefresh import redact
from proxyrefresh.fanout import aio
from proxyrefresh.fanout.exits import (
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_REDIS,
    EXIT_STATE_LOST,
    EXIT_TERMINATED,
)
from proxyrefresh.fanout.runner import TERMINATED, Outcome, Processor, run_chunk
from proxyrefresh.fanout.slots import Slots
from proxyrefresh.fanout.store import ChunkResult, RunKeys, RunStore, StateLost

log = logging.getLogger(__name__)


class PodFailure(Exception):
    """A kind's own reason to stop before processing, with its exit code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class PodRun:
    """Which chunk of which run this pod processes, and how."""

    run_id: str
    index: int
    redis_url: str  # for messages only, always redacted
    soft_deadline: float | None = None  # seconds after start
    progress_interval: float = 1.0
    ttl: int = 24 * 3600
    prefix: str = field(kw_only=True)  # the kind's (fanout.kind.Kind.key_prefix)
    # At most this many chunks at work at once (fanout.slots), when the Job
    # runs pods ahead; a pod goes ahead without a slot slot_wait after its start.
    slots: int | None = None
    slot_wait: float = math.inf

    def gate(
        self, redis: Redis, stop: asyncio.Event, started: float
    ) -> AbstractAsyncContextManager[bool]:
        if not self.slots:
            return contextlib.nullcontext(True)
        slots = Slots(redis, RunKeys(self.run_id, self.prefix), self.slots)
        return slots.held(self.index, stop, started + self.slot_wait - time.monotonic())


Prepare = Callable[[], Awaitable[Processor]]


def default_summary(result: ChunkResult) -> str:
    return (
        f"processed {result.processed}, succeeded {result.succeeded}, pending {len(result.pending)}"
    )


async def run_pod(
    pod: PodRun,
    redis: Redis,
    prepare: Prepare,
    started: float,
    summary: Callable[[ChunkResult], str] = default_summary,
) -> int:
    """Process the pod's chunk; returns the exit code."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    store = RunStore(redis, pod.run_id, pod.ttl, prefix=pod.prefix)
    try:
        process = await prepare()
        async with pod.gate(redis, stop, started):
            # A pod started ahead counts its deadline from when it may work.
            outcome: Outcome = await run_chunk(
                store,
                pod.index,
                process,
                soft_deadline=pod.soft_deadline,
                stop=stop,
                progress_interval=pod.progress_interval,
                started=time.monotonic() if pod.slots else started,
            )
    except PodFailure as exc:
        log.error("chunk %s: %s", pod.index, exc)
        return exc.code
    except StateLost as exc:
        log.error("chunk %s: %s", pod.index, exc)
        return EXIT_STATE_LOST
    except RedisError as exc:
        where, why = redact.url(pod.redis_url), redact.secrets_in(str(exc))
        log.error("chunk %s: Redis at %s unavailable: %s", pod.index, where, why)
        return EXIT_REDIS
    finally:
        await redis.aclose()
    counted = outcome.first_completion or outcome.how == TERMINATED
    log.info(
        "chunk %s %s: %s%s",
        pod.index,
        outcome.how,
        summary(outcome.result),
        "" if counted else " (already counted)",
    )
    return EXIT_TERMINATED if outcome.how == TERMINATED else EXIT_OK


def main(run: Callable[[float], Coroutine[object, object, int]]) -> int:
    """A pod process: log to stderr, run, map anything unexpected to 70."""
    started = time.monotonic()
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return aio.run(run(started))
    except Exception:
        log.exception("unexpected error")
        return EXIT_INTERNAL
