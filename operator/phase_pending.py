"""Pending: wait for the pool (concurrencyPolicy), or start scraping."""

from __future__ import annotations

import contextlib
from typing import Any

from redis.exceptions import RedisError

from proxyrefresh import constants as c
from proxyrefresh.api import ConcurrencyPolicy, Phase
from proxyrefresh.fanout.store import StateLost
from proxyrefresh.operator import kube, policy
from proxyrefresh.operator.context import Context
from proxyrefresh.operator.status import now_iso
from proxyrefresh.operator.transition import Refresh, Transition


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
    """concurrencyPolicy, per pool, like a CronJob's. Forbid waits for the
    refreshes ahead to end; Replace asks them to stop and waits for that."""
    refresh, spec = t.refresh, t.refresh.spec
    policy_ = spec.concurrency_policy
    if policy_ is ConcurrencyPolicy.ALLOW:
        return True
    ahead = []
    if ctx.peers is not None and policy_ is ConcurrencyPolicy.FORBID:
        # kopf's index: a waiting refresh costs no API call.
        ahead = policy.unfinished_before(ctx.peers(refresh.namespace, spec.pool), refresh.body)
    if not ahead:
        # About to start (or replacing): the API has the last word, as the
        # index may lag behind refreshes created or ended a moment before.
        items = await kube.list_refreshes(refresh.namespace)
        ahead = policy.unfinished_before(items, refresh.body)
    if not ahead:
        return True
    names = ", ".join(it["metadata"]["name"] for it in ahead)
    if policy_ is ConcurrencyPolicy.REPLACE:
        await replace(refresh, ahead)
        reason, message = "Replacing", f"stopping {names} (concurrencyPolicy Replace)"
    else:
        reason = "PoolBusy"
        message = f"pool {spec.pool} is busy with {names} (concurrencyPolicy Forbid)"
    t.condition("Waiting", True, reason, message)
    t.set(phase=Phase.PENDING.value, progress="waiting", message=message)
    return False


async def replace(refresh: Refresh, ahead: list[dict[str, Any]]) -> None:
    """Ask each refresh ahead to stop, by an annotation on it, never by
    writing its status: its own loop sees the annotation within half a
    second (operator/driver.py) and fails itself (:func:`stop`)."""
    for other in ahead:
        meta = other["metadata"]
        if (meta.get("annotations") or {}).get(c.ANNOTATION_REPLACED_BY) != refresh.name:
            await kube.annotate_refresh(
                refresh.namespace,
                meta["name"],
                meta["uid"],
                {c.ANNOTATION_REPLACED_BY: refresh.name},
            )


def stop(ctx: Context, t: Transition) -> None:
    """Replaced: fail, then (once that is written) delete the Job and the
    run's keys, which a Failed refresh no longer needs."""
    refresh = t.refresh
    t.fail("Replaced", f"replaced by {refresh.replaced_by}")

    async def stop_run() -> None:
        await kube.delete_job(refresh.namespace, refresh.job_name)
        with contextlib.suppress(RedisError):
            await ctx.store(refresh.uid).delete()

    t.after.append(stop_run)
