"""Pending: wait for the pool (concurrencyPolicy), or start scraping."""

from __future__ import annotations

import contextlib

from redis.exceptions import RedisError

from proxyrefresh.api import ConcurrencyPolicy, Phase
from proxyrefresh.fanout.store import StateLost
from proxyrefresh.operator import kube, policy
from proxyrefresh.operator.context import Context
from proxyrefresh.operator.status import now_iso
from proxyrefresh.operator.transition import Refresh, Transition, fail


async def admit(ctx: Context, t: Transition) -> None:
    """Pending: wait for the pool (concurrencyPolicy), or start scraping; a
    refresh whose Job exists (an operator restarted) resumes from Redis."""
    refresh = t.refresh
    job_name = refresh.job_name
    # The pool first: a waiting refresh steps every few seconds, and asking
    # the index costs nothing where reading its Job costs an API call.
    if not await may_start(ctx, t):
        return
    if await kube.read_job(refresh.namespace, job_name) is not None:
        try:
            progress = await ctx.store(refresh.uid).progress()
        except StateLost as exc:
            t.fail("StateLost", str(exc))
            return
        t.set(phase=Phase.DISPATCHED.value, jobName=job_name, totalChunks=progress.total_chunks)
        return
    full = await ctx.memory.above_high_water()
    if full:
        t.condition("Waiting", True, "RedisFull", full)
        t.set(phase=Phase.PENDING.value, progress="waiting", message=full)
        return
    t.condition("Waiting", False, "Started", "the pool was free")
    t.set(phase=Phase.SCRAPING.value, startedAt=now_iso(), progress="scraping")


async def may_start(ctx: Context, t: Transition) -> bool:
    """concurrencyPolicy, per pool, like a CronJob's."""
    refresh, spec = t.refresh, t.refresh.spec
    if spec.concurrency_policy is ConcurrencyPolicy.ALLOW:
        return True
    ahead = []
    if ctx.peers is not None:  # kopf's index: a waiting refresh costs no API call
        ahead = policy.unfinished_before(ctx.peers(refresh.namespace, spec.pool), refresh.body)
    if not ahead:
        # About to start: the API has the last word, as the index may lag
        # behind refreshes created a moment before (once per start, not per step).
        items = await kube.list_refreshes(refresh.namespace)
        ahead = policy.unfinished_before(items, refresh.body)
    if not ahead:
        return True
    if spec.concurrency_policy is ConcurrencyPolicy.REPLACE:
        for other in ahead:  # the whole object, not the index's summary of it
            body = await kube.get_refresh(refresh.namespace, other["metadata"]["name"])
            if body is not None and body["metadata"]["uid"] == other["metadata"]["uid"]:
                await stop(ctx, Refresh(body), f"replaced by {refresh.name}")
        return True
    names = ", ".join(it["metadata"]["name"] for it in ahead)
    message = f"pool {spec.pool} is busy with {names} (concurrencyPolicy Forbid)"
    t.condition("Waiting", True, "PoolBusy", message)
    t.set(phase=Phase.PENDING.value, progress="waiting", message=message)
    return False


async def stop(ctx: Context, refresh: Refresh, message: str) -> None:
    """Replace: fail the other refresh first, then delete its Job and keys."""
    await fail(ctx, refresh, "Replaced", message)
    await kube.delete_job(refresh.namespace, refresh.job_name)
    with contextlib.suppress(RedisError):
        await ctx.store(refresh.uid).delete()
