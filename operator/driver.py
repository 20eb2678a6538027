"""What drives one refresh: a loop per refresh, woken by its run's events.

The pods publish every change of a run on its Redis events channel (the
fan-out store's scripts do, with the counters). One kopf daemon per active
refresh follows that channel (over the operator's one pub/sub connection,
operator/subscriptions.py) and runs a reconcile step when an event
arrives, at most one step a second, so the status follows Redis within
about a second; without events (scraping, waiting for the pool, the Job's
end, which Redis does not see) it steps every HEARTBEAT seconds. One loop
per refresh means one writer: its steps never race each other.

The loop keeps the status it wrote itself: kopf's view of the object may
lag behind our own patches, and a step must not act on the state before
its last write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from redis.exceptions import RedisError

from proxyrefresh import constants as c
from proxyrefresh.api import Phase, true_condition
from proxyrefresh.api import finished as api_finished
from proxyrefresh.constants import RUNS
from proxyrefresh.operator import kube, reconcile
from proxyrefresh.operator.context import Context
from proxyrefresh.operator.subscriptions import Feed
from proxyrefresh.operator.transition import Refresh

log = logging.getLogger("proxyrefresh.operator")
HEARTBEAT = 2.0  # seconds between steps when nothing is published
# Between the starts of two steps woken by events: a step's own reads come
# before its write, so writes stay about a second apart and a change waits
# at most about a second for its step.
MIN_GAP = 1.0
RETRY = 5.0  # after a step that failed for a reason a retry may cure
# A run's Job that neither publishes nor changes (its pods not scheduled,
# say) is looked at ever less often, the heartbeat doubling up to this:
# 100 such runs stepping every 2 s kept a third of a core busy.
QUIET_HEARTBEAT = 16.0
# Between steps of a refresh waiting for its pool (concurrencyPolicy Forbid):
# a refresh of the pool that ends wakes the waiting ones at once (PoolTurns),
# so this is only the fallback (a pool freed by another operator process).
WAITING_HEARTBEAT = 15.0
# Between steps once every chunk is done: the Job's end is not a Redis
# event, and at the heartbeat's pace it was seen up to 2 s late.
JOB_END_POLL = 0.25


FOLLOWED = (Phase.DISPATCHED.value, Phase.PROCESSING.value)


def finished(status: dict[str, Any]) -> bool:
    return api_finished(status.get("phase"))


def awaiting_job_end(status: dict[str, Any]) -> bool:
    """Every chunk done or given up, the Job not yet seen to end."""
    if status.get("phase") not in (Phase.DISPATCHED.value, Phase.PROCESSING.value):
        return False
    total = int(status.get("totalChunks") or 0)
    ended = int(status.get("completedChunks") or 0) + int(status.get("failedChunks") or 0)
    return total > 0 and ended >= total


def merged_status(seen: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    """The status to step from: what we wrote last over what kopf has seen,
    unless kopf has seen it end (a write of ours that it saw first)."""
    if finished(seen):
        return seen
    return {**seen, **ours}


def waiting_for_pool(status: dict[str, Any]) -> bool:
    """Pending behind another refresh of its pool (concurrencyPolicy)."""
    waiting = true_condition(status, "Waiting")
    return status.get("phase") == Phase.PENDING.value and bool(
        waiting and waiting.get("reason") in ("PoolBusy", "Replacing")
    )


async def drive(ctx: Context, body: Any, stopped: Any) -> None:
    """Step the refresh until it ends or the daemon is stopped."""
    uid = str(body["metadata"]["uid"])
    namespace = str(body["metadata"]["namespace"])
    kube.writes(c.PLURAL, namespace, str(body["metadata"]["name"]))  # this loop, nothing else
    ours: dict[str, Any] = {}
    feed: Feed | None = None
    last_step = written = 0.0
    moving = False  # the last step may move on at once
    quiet = 0  # steps in a row that wrote nothing, with no event between
    try:
        while not stopped:
            current = dict(body)
            status = merged_status(dict(current.get("status") or {}), ours)
            if finished(status):  # ended by another step (Replace) or seen ended
                ctx.pool_turns.wake(namespace, Refresh(current).pool)
                return
            # Steps start at least MIN_GAP apart, but how long a step reads
            # varies, so progress writes are paced too (not a step that
            # follows a transition at once: it is no progress report).
            paced = 0.0 if moving else written + MIN_GAP
            refresh = Refresh({**current, "status": status}, not_before=paced)
            turn = ctx.pool_turns.event(namespace, refresh.pool)
            feed = feed_for(ctx, feed, uid, status)  # before the step: a scrape's news comes here
            delay = HEARTBEAT
            last_step = time.monotonic()  # gaps count from a step's start: a slow
            try:  # step must not add its own length to the next one's wait
                with ctx.metrics.reconcile.labels("refresh").time():
                    moving = await reconcile.run_step(ctx, refresh)
            except Exception as exc:  # kopf.TemporaryError and the unforeseen alike
                if isinstance(exc.__cause__, RedisError):
                    ctx.metrics.redis_errors.labels("refresh").inc()
                log.warning("%s/%s: step failed, again in %gs: %s",
                            refresh.namespace, refresh.name, RETRY, exc)  # fmt: skip
                delay, moving = RETRY, False
            wrote = bool(refresh.written_at) and refresh.written_at != written
            ours, written = refresh.status, refresh.written_at or written
            if finished(ours):
                ctx.pool_turns.wake(namespace, refresh.pool)
                return
            if moving:  # the next transition needs nothing to wait for
                continue
            if delay == HEARTBEAT and awaiting_job_end(ours):
                delay = JOB_END_POLL
            # A newer refresh may ask this one to stop (Replace, an
            # annotation kopf's body shows): seen within half a second, whatever
            # it waits for; not after a failed step, which waits RETRY.
            asked = stopped if delay == RETRY else Asked(stopped, body)
            if delay == HEARTBEAT and waiting_for_pool(ours):
                await wait_for_turn(turn, asked, last_step + WAITING_HEARTBEAT)
                continue
            feed = feed_for(ctx, feed, uid, ours)
            if delay == HEARTBEAT and ours.get("phase") in FOLLOWED:
                delay = min(QUIET_HEARTBEAT, HEARTBEAT * 2**quiet)
            news = await wait_for_news(feed, asked, last_step, delay)
            quiet = 0 if news or wrote else quiet + 1
    finally:
        await ctx.scrapes.cancel(uid)  # a scrape its refresh no longer needs
        if feed is not None:
            ctx.subscriptions.close(feed)


def feed_for(ctx: Context, feed: Feed | None, uid: str, status: dict[str, Any]) -> Feed | None:
    """The run's channel, followed from the first step past Pending."""
    if feed is None and status.get("phase") not in (None, Phase.PENDING.value):
        return ctx.subscriptions.open(RUNS.keys(uid).events)
    return feed


class Asked:
    """Truthy once the daemon is stopped or a newer refresh has asked this
    one to stop: the waits below end then, and the next step fails it."""

    def __init__(self, stopped: Any, body: Any) -> None:
        self.stopped, self.body = stopped, body

    def __bool__(self) -> bool:
        return bool(self.stopped) or Refresh(self.body).replaced_by is not None


async def wait_for_turn(turn: asyncio.Event, stopped: Any, deadline: float) -> None:
    """Until a refresh of the pool ends, ``deadline``, or the daemon is stopped."""
    while not stopped and not turn.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(turn.wait(), min(left, 0.5))


async def wait_for_news(feed: Feed | None, stopped: Any, last_step: float, delay: float) -> bool:
    """Until an event (no sooner than MIN_GAP after the last step), the
    ``delay`` runs out, or the daemon is stopped; whether an event came."""
    deadline = last_step + delay
    news = False
    while not stopped:
        now = time.monotonic()
        if now >= deadline or (news and now >= last_step + MIN_GAP):
            return news
        wait = min(deadline, last_step + MIN_GAP if news else deadline) - now
        wait = max(0.0, min(wait, 0.5))  # `stopped` is looked at twice a second
        if feed is None:
            await asyncio.sleep(wait)
            continue
        news = await feed.wait(wait) or news
    return news
