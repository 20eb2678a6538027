"""Dispatched and Processing: progress from Redis, until the Job ends."""

from __future__ import annotations

from redis.exceptions import RedisError

from proxyrefresh.api import Phase
from proxyrefresh.fanout.job import job_end
from proxyrefresh.fanout.store import StateLost
from proxyrefresh.operator import kube
from proxyrefresh.operator.context import Context, redis_unavailable
from proxyrefresh.operator.phase_scraping import grant
from proxyrefresh.operator.status import progress_fields
from proxyrefresh.operator.transition import Transition


async def follow(ctx: Context, t: Transition) -> None:
    """Progress from Redis; Merging once the Job finished."""
    refresh = t.refresh
    job_name = refresh.job_name
    job = await kube.read_job(refresh.namespace, job_name)
    try:
        progress = await ctx.run(refresh.uid).follow()  # its keys kept alive meanwhile
    except StateLost as exc:
        await kube.delete_job(refresh.namespace, job_name)
        t.fail("StateLost", f"{exc}; the refresh cannot be merged")
        return
    except RedisError as exc:
        raise redis_unavailable("", exc) from exc
    if job is None:
        t.fail("JobMissing", f"Job {job_name} was deleted before it finished")
        return
    await grant(ctx, refresh)
    t.set(**progress_fields(refresh.status, progress, job))
    failed_pods = int((job.get("status") or {}).get("failed") or 0)
    ctx.metrics.pod_failures(refresh.uid, refresh.namespace, refresh.pool, failed_pods)
    if job_end(job).finished:
        t.set(phase=Phase.MERGING.value)
