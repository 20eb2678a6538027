"""Merging: the results into the pool, the export, then Complete or Failed."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from proxyrefresh.api import CredentialsExport, Phase, ProxyRefreshSpec
from proxyrefresh.fanout.job import job_end
from proxyrefresh.fanout.store import RunStore, StateLost
from proxyrefresh.models import Tally
from proxyrefresh.operator import dispatch, kube, merge, policy, pools
from proxyrefresh.operator.context import Context, Refused, redis_unavailable
from proxyrefresh.operator.status import now_iso, progress_fields
from proxyrefresh.operator.transition import Refresh, Transition
from proxyrefresh.pool import LastMerge, MergeOutcome, PoolEntry
from proxyrefresh.redis_topology import replicated

log = logging.getLogger("proxyrefresh.operator")


MERGE_READ_ITEMS = 4096  # results read from Redis per round trip while merging


@dataclass
class Merged:
    """What a merge did: the counts for the status, the pool, the export."""

    found: Tally
    pool: MergeOutcome
    exported: list[PoolEntry]


async def finish(ctx: Context, t: Transition) -> None:
    """Merge into the pool, then Complete (only now) or Failed."""
    refresh = t.refresh
    job_name = refresh.job_name
    job = await kube.read_job(refresh.namespace, job_name)
    store = ctx.store(refresh.uid)
    try:
        progress = await store.progress()
    except StateLost as exc:
        t.fail("StateLost", f"{exc}; nothing to merge")
        return
    merged = await merge_into_pool(ctx, refresh, store)
    await store.mark_finished()
    await ctx.run(refresh.uid).revoke()
    t.set(**progress_fields(refresh.status, progress, job))
    t.set(**counted_fields(merged))
    # Once the status says how it ended (a repeated merge step would find
    # nothing to count): the chunks and results go, the rest soon after.
    t.after.append(lambda: store.retire(ctx.settings.finished_key_ttl_seconds))
    t.after.append(lambda: prune_history(ctx, refresh))
    end = job_end(job)
    if not end.succeeded:
        t.fail(
            end.reason or "JobFailed",
            f"Job {job_name} failed ({end.reason}: {end.message}); merged what finished: "
            f"{merged.found.passed} usable of {merged.found.checked} checked",
        )
        return
    complete(t, refresh.spec, merged)


async def merge_into_pool(ctx: Context, refresh: Refresh, store: RunStore) -> Merged:
    """Stream the results into the pool and write the export. Streamed: a
    few chunks at a time are read, counted and merged, so a run of any size
    merges in bounded memory (the tally keeps counts only)."""
    spec = refresh.spec
    found = Tally()
    # About MERGE_READ_ITEMS results a read, whatever the chunk size (a
    # status from before chunkSize was recorded: 64 chunks, as it was).
    size = refresh.state.chunk_size or 0
    per_read = max(1, MERGE_READ_ITEMS // size) if size else 64

    async def results() -> AsyncIterator[tuple[str, bool, PoolEntry | None]]:
        async for _, chunk in store.iter_results(batch=per_read):
            for item in merge.tally_chunk(found, chunk, spec.filter):
                yield item

    # A ProxyPool, if there is one, says how the pool scores and ages.
    pool_body = await kube.get_pool(refresh.namespace, spec.pool)
    scoring, max_age = pools.scoring_of(pool_body)
    pool = ctx.pool(refresh.namespace, spec.pool, scoring)
    try:
        into = await pool.merge(
            refresh.uid, results(), ctx.settings.pool_ttl_seconds, max_age, announce=False
        )
        best = await pool.entries(limit=spec.output.max_bytes // 100)
    except RedisError as exc:
        raise redis_unavailable(" while merging", exc) from exc
    exported = await export(refresh, best)
    # Left in Redis before the refresh says Complete, for the ProxyPool's
    # own loop to write into its status with the merge's counts (woken by
    # the pool's channel only now, so one look sees both): an operator
    # stopped in between repeats this step (the merge is keyed by the
    # refresh's uid) instead of never noting it.
    try:
        await pool.note_merge(LastMerge(refresh.name, now_iso(), len(exported)))
        # A replica holds the merge before the refresh says Complete: a
        # failover right after cannot take the pool's new results along.
        if await replicated(ctx.redis) is False:
            log.warning("%s: no replica acknowledged the merge in time", refresh.name)
    except RedisError as exc:
        raise redis_unavailable(" while merging", exc) from exc
    return Merged(found, into, exported)


async def export(refresh: Refresh, best: list[PoolEntry]) -> list[PoolEntry]:
    """The pool's best that fit, into the output ConfigMap."""
    spec = refresh.spec
    include = spec.output.credentials is CredentialsExport.INCLUDE
    exported = merge.fit(best, spec.output.max_bytes, include)
    try:
        await merge.write_export(
            refresh.namespace,
            spec.output_config_map,
            spec.pool,
            exported,
            dispatch.labels(refresh.name, spec.pool) | {"app.kubernetes.io/component": "pool"},
            include_credentials=include,
        )
    except merge.OutputNotManaged as exc:
        raise Refused("OutputNotManaged", str(exc)) from None
    return exported


def counted_fields(merged: Merged) -> dict[str, Any]:
    found = merged.found
    return {
        "checked": found.checked,
        "live": found.live,
        "usable": found.passed,
        "unchecked": found.unchecked,
        "poolSize": merged.pool.size,
        "poolUsable": merged.pool.usable,
        "exported": len(merged.exported),
        "anonymity": {
            level: found.anonymity.get(level, 0) for level in ("transparent", "anonymous", "elite")
        },
        "completedAt": now_iso(),
    }


def complete(t: Transition, spec: ProxyRefreshSpec, merged: Merged) -> None:
    """Complete, with a summary, and Degraded when too few were usable."""
    found, exported = merged.found, merged.exported
    summary = (
        f"{found.passed} usable of {found.live} live, {found.checked} checked; "
        f"pool {spec.pool} holds {merged.pool.size}, {len(exported)} of them in ConfigMap "
        f"{spec.output_config_map}"
    )
    hidden = merge.withheld(exported)
    if hidden and spec.output.credentials is CredentialsExport.OMIT:
        summary += f" ({hidden} with credentials: passwords only in the Redis pool)"
    degraded = found.passed < spec.min_usable
    t.condition(
        "Degraded",
        degraded,
        "TooFewUsable" if degraded else "EnoughUsable",
        f"{found.passed} usable, minUsable {spec.min_usable}",
    )
    t.condition("Failed", False, "Completed", "")
    t.condition("Complete", True, "Merged", summary)
    t.set(phase=Phase.COMPLETE.value, message=summary)
    t.note("Complete", summary, warning=degraded)


async def prune_history(ctx: Context, refresh: Refresh) -> None:
    items = await kube.list_refreshes(refresh.namespace)
    for name in policy.history_to_delete(
        items, refresh.spec.pool, ctx.settings.keep_complete, ctx.settings.keep_failed
    ):
        log.info("history: deleting %s/%s", refresh.namespace, name)
        await kube.delete_refresh(refresh.namespace, name)
