"""One refresh, one step at a time, from whatever the status and Redis say.

The timer handler calls :func:`step` every couple of seconds while a refresh
is not finished. Each step reads the world (status, Redis, the Job), does at
most one transition and writes it to the status at once, so an operator
killed at any point resumes where it was: the Job's name is derived from the
refresh (never a second Job) and the pool remembers which refreshes it
merged (never a second merge).

    Pending ──► Scraping ──► Dispatched ──► Processing ──► Merging ──► Complete
       │ (Forbid: waits)        │ Job Failed / state lost ──────────► Failed
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from proxyrefresh.api import ConcurrencyPolicy, Engine, Phase, ProxyRefreshSpec, dump
from proxyrefresh.fanout.store import RunStore, StateLost
from proxyrefresh.operator import dispatch, kube, merge, policy, scrape
from proxyrefresh.operator.status import (
    changes,
    job_finished,
    now_iso,
    progress_fields,
    progress_text,
    set_condition,
)
from proxyrefresh.settings import OperatorSettings, RedisSettings

log = logging.getLogger("proxyrefresh.operator")
POOL_KEY = "proxyrefresh:pool:{{{namespace}/{pool}}}"


@dataclass
class Context:
    """What every step needs; built once at operator start-up."""

    settings: OperatorSettings
    redis_settings: RedisSettings
    redis: Redis
    events: Any = None  # callable(reason, message, warning=False), set per call


@dataclass
class Refresh:
    body: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.body["metadata"]["namespace"])

    @property
    def uid(self) -> str:
        return str(self.body["metadata"]["uid"])

    @property
    def generation(self) -> int | None:
        generation = self.body["metadata"].get("generation")
        return int(generation) if generation is not None else None

    @property
    def status(self) -> dict[str, Any]:
        return dict(self.body.get("status") or {})

    @property
    def phase(self) -> str:
        return str(self.status.get("phase") or Phase.PENDING.value)

    @property
    def spec(self) -> ProxyRefreshSpec:
        return ProxyRefreshSpec.model_validate(self.body.get("spec") or {})


async def patch(ctx: Context, refresh: Refresh, fields: dict[str, Any]) -> None:
    """Patch the status and keep the local copy in step."""
    delta = changes(refresh.status, fields)
    if not delta:
        return
    delta["observedGeneration"] = refresh.generation
    await kube.patch_status(refresh.namespace, refresh.name, delta)
    refresh.body["status"] = {**refresh.status, **delta}


def note(ctx: Context, reason: str, message: str, warning: bool = False) -> None:
    log.info("%s: %s", reason, message)
    if ctx.events is not None:
        ctx.events(reason, message, warning)


async def fail(ctx: Context, refresh: Refresh, reason: str, message: str) -> None:
    conditions = set_condition(
        refresh.status.get("conditions"), "Failed", True, reason, message, refresh.generation
    )
    conditions = set_condition(conditions, "Complete", False, reason, message, refresh.generation)
    await patch(
        ctx,
        refresh,
        {
            "phase": Phase.FAILED.value,
            "message": message,
            "completedAt": now_iso(),
            "conditions": conditions,
        },
    )
    note(ctx, reason, message, warning=True)


async def step(ctx: Context, body: dict[str, Any]) -> None:
    refresh = Refresh(body)
    try:
        refresh.spec  # noqa: B018 - validate before anything else
    except ValidationError as exc:
        await fail(ctx, refresh, "InvalidSpec", f"spec rejected: {exc.errors()[0]['msg']}")
        return
    phase = refresh.phase
    if phase in (Phase.PENDING, Phase.SCRAPING):
        await start(ctx, refresh)
    elif phase in (Phase.DISPATCHED, Phase.PROCESSING):
        await follow(ctx, refresh)
    elif phase == Phase.MERGING:
        await finish(ctx, refresh)


# --- Pending / Scraping ------------------------------------------------------


async def start(ctx: Context, refresh: Refresh) -> None:
    spec = refresh.spec
    if refresh.phase == Phase.PENDING and not await may_start(ctx, refresh, spec):
        return
    job_name = dispatch.job_name(refresh.name, refresh.uid)
    store = RunStore(ctx.redis, refresh.uid, ctx.redis_settings.key_ttl_seconds)
    if await kube.read_job(refresh.namespace, job_name) is not None:
        # Dispatched before a restart: pick the run up from Redis.
        try:
            progress = await store.progress()
        except StateLost as exc:
            await fail(ctx, refresh, "StateLost", str(exc))
            return
        await patch(
            ctx,
            refresh,
            {
                "phase": Phase.DISPATCHED.value,
                "jobName": job_name,
                "totalChunks": progress.total_chunks,
            },
        )
        return
    if spec.checker.engine is Engine.MUBENG:
        await fail(
            ctx,
            refresh,
            "EngineUnavailable",
            "engine mubeng is not available in this build: the mubeng module could "
            "not be fetched; use engine: native",
        )
        return
    waiting = set_condition(
        refresh.status.get("conditions"),
        "Waiting",
        False,
        "Started",
        "the pool was free",
        refresh.generation,
    )
    await patch(
        ctx,
        refresh,
        {
            "phase": Phase.SCRAPING.value,
            "startedAt": now_iso(),
            "progress": "scraping",
            "conditions": waiting,
        },
    )
    s = ctx.settings
    found = await scrape.scrape(
        spec.sources,
        refresh.namespace,
        s.source_timeout_seconds,
        s.source_retries,
        s.source_max_bytes,
    )
    sources = [dump(x) for x in found.sources]
    if found.failed:
        await patch(ctx, refresh, {"sources": sources})
        await fail(ctx, refresh, "NoCandidates", found.failure_message())
        return
    if await replaced_meanwhile(refresh):
        return
    chunks = dispatch.chunked([p.model_dump(mode="json") for p in found.proxies], spec.chunk_size)
    try:
        await store.write_chunks(chunks)
    except RedisError as exc:
        raise kopf_temporary(f"Redis unavailable while dispatching: {exc}") from exc
    manifest = dispatch.build_job(
        name=refresh.name,
        namespace=refresh.namespace,
        uid=refresh.uid,
        spec=spec,
        chunks=len(chunks),
        settings=s,
        redis=ctx.redis_settings,
    )
    manifest["metadata"]["ownerReferences"] = [owner_reference(refresh)]
    account = s.worker_service_account
    if account and not await kube.service_account_exists(refresh.namespace, account):
        # Not installed in this namespace: the default one, still without a token.
        manifest["spec"]["template"]["spec"].pop("serviceAccountName", None)
    created = await kube.create_job(manifest)
    await patch(
        ctx,
        refresh,
        {
            "phase": Phase.DISPATCHED.value,
            "jobName": job_name,
            "candidates": len(found.proxies),
            "totalChunks": len(chunks),
            "completedChunks": 0,
            "checked": 0,
            "live": 0,
            "progress": progress_text(0, len(chunks)),
            "sources": sources,
        },
    )
    if created:
        note(
            ctx,
            "Dispatched",
            f"{len(found.proxies)} candidates in {len(chunks)} chunks, Job {job_name}",
        )


async def replaced_meanwhile(refresh: Refresh) -> bool:
    """Scraping takes a while: a newer refresh with concurrencyPolicy Replace
    may have failed this one meanwhile. Then it must not start a Job."""
    current = await kube.get_refresh(refresh.namespace, refresh.name)
    phase = ((current or {}).get("status") or {}).get("phase")
    if current is None or phase in (Phase.COMPLETE.value, Phase.FAILED.value):
        log.info(
            "%s/%s ended while scraping (%s); not dispatching",
            refresh.namespace,
            refresh.name,
            phase or "deleted",
        )
        return True
    return False


def owner_reference(refresh: Refresh) -> dict[str, Any]:
    return {
        "apiVersion": refresh.body["apiVersion"],
        "kind": refresh.body["kind"],
        "name": refresh.name,
        "uid": refresh.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def kopf_temporary(message: str) -> Exception:
    import kopf

    return kopf.TemporaryError(message, delay=5)


async def may_start(ctx: Context, refresh: Refresh, spec: ProxyRefreshSpec) -> bool:
    """concurrencyPolicy, per pool, like a CronJob's."""
    if spec.concurrency_policy is ConcurrencyPolicy.ALLOW:
        return True
    items = await kube.list_refreshes(refresh.namespace)
    ahead = policy.unfinished_before(items, refresh.body)
    if not ahead:
        return True
    if spec.concurrency_policy is ConcurrencyPolicy.REPLACE:
        for other in ahead:
            await stop(ctx, Refresh(other), f"replaced by {refresh.name}")
        return True
    names = ", ".join(it["metadata"]["name"] for it in ahead)
    message = f"pool {spec.pool} is busy with {names} (concurrencyPolicy Forbid)"
    conditions = set_condition(
        refresh.status.get("conditions"), "Waiting", True, "PoolBusy", message, refresh.generation
    )
    await patch(
        ctx,
        refresh,
        {
            "phase": Phase.PENDING.value,
            "progress": "waiting",
            "conditions": conditions,
            "message": message,
        },
    )
    return False


async def stop(ctx: Context, refresh: Refresh, message: str) -> None:
    """Replace: fail the other refresh first, then delete its Job."""
    await fail(ctx, refresh, "Replaced", message)
    await kube.delete_job(refresh.namespace, dispatch.job_name(refresh.name, refresh.uid))


# --- Dispatched / Processing ------------------------------------------------


async def follow(ctx: Context, refresh: Refresh) -> None:
    store = RunStore(ctx.redis, refresh.uid, ctx.redis_settings.key_ttl_seconds)
    job_name = refresh.status.get("jobName") or dispatch.job_name(refresh.name, refresh.uid)
    job = await kube.read_job(refresh.namespace, job_name)
    try:
        progress = await store.progress()
        await store.touch()
    except StateLost as exc:
        await kube.delete_job(refresh.namespace, job_name)
        await fail(ctx, refresh, "StateLost", f"{exc}; the refresh cannot be merged")
        return
    except RedisError as exc:
        raise kopf_temporary(f"Redis unavailable: {exc}") from exc
    if job is None:
        await fail(ctx, refresh, "JobMissing", f"Job {job_name} was deleted before it finished")
        return
    await patch(ctx, refresh, progress_fields(refresh.status, progress, job))
    finished, _, _, _ = job_finished(job)
    if finished:
        await patch(ctx, refresh, {"phase": Phase.MERGING.value})
        await finish(ctx, refresh, job)


# --- Merging -------------------------------------------------------------------


async def finish(ctx: Context, refresh: Refresh, job: dict[str, Any] | None = None) -> None:
    spec = refresh.spec
    job_name = refresh.status.get("jobName") or dispatch.job_name(refresh.name, refresh.uid)
    job = job or await kube.read_job(refresh.namespace, job_name)
    _, succeeded, reason, message = job_finished(job)
    store = RunStore(ctx.redis, refresh.uid, ctx.redis_settings.key_ttl_seconds)
    try:
        results = await store.read_results()
        progress = await store.progress()
    except StateLost as exc:
        await fail(ctx, refresh, "StateLost", f"{exc}; nothing to merge")
        return
    found = merge.tally(results, spec.filter)
    pool = await merge.write_pool(
        refresh.namespace,
        spec.output_config_map,
        spec.pool,
        refresh.uid,
        found,
        dispatch.labels(refresh.name, spec.pool) | {"app.kubernetes.io/component": "pool"},
    )
    await ctx.redis.set(
        POOL_KEY.format(namespace=refresh.namespace, pool=spec.pool),
        merge.render(pool)[merge.JSON_KEY],
        ex=ctx.settings.pool_ttl_seconds,
    )
    await store.mark_finished()
    fields: dict[str, Any] = {
        **progress_fields(refresh.status, progress, job),
        "checked": found.checked,
        "live": found.live,
        "usable": found.usable,
        "unchecked": found.unchecked,
        "poolSize": len(pool),
        "anonymity": {
            level: found.anonymity.get(level, 0) for level in ("transparent", "anonymous", "elite")
        },
        "completedAt": now_iso(),
    }
    conditions = refresh.status.get("conditions")
    gen = refresh.generation
    if succeeded:
        summary = (
            f"{found.usable} usable of {found.live} live, {found.checked} checked; "
            f"pool {spec.pool} holds {len(pool)} in ConfigMap {spec.output_config_map}"
        )
        degraded = found.usable < spec.min_usable
        conditions = set_condition(
            conditions,
            "Degraded",
            degraded,
            "TooFewUsable" if degraded else "EnoughUsable",
            f"{found.usable} usable, minUsable {spec.min_usable}",
            gen,
        )
        conditions = set_condition(conditions, "Failed", False, "Completed", "", gen)
        conditions = set_condition(conditions, "Complete", True, "Merged", summary, gen)
        fields.update(phase=Phase.COMPLETE.value, conditions=conditions, message=summary)
        await patch(ctx, refresh, fields)
        note(ctx, "Complete", summary, warning=degraded)
    else:
        message = (
            f"Job {job_name} failed ({reason}: {message}); merged what finished: "
            f"{found.usable} usable of {found.checked} checked"
        )
        await patch(ctx, refresh, fields)
        await fail(ctx, refresh, reason or "JobFailed", message)
    log.info(
        "%s/%s: status patches sent by this operator so far: %d",
        refresh.namespace,
        refresh.name,
        kube.STATUS_PATCHES,
    )
    await prune_history(ctx, refresh)


async def prune_history(ctx: Context, refresh: Refresh) -> None:
    items = await kube.list_refreshes(refresh.namespace)
    for name in policy.history_to_delete(
        items, refresh.spec.pool, ctx.settings.keep_complete, ctx.settings.keep_failed
    ):
        log.info("history: deleting %s/%s", refresh.namespace, name)
        await kube.delete_refresh(refresh.namespace, name)


async def cleanup(ctx: Context, body: dict[str, Any]) -> None:
    """On deletion: the Redis keys go now; the Job goes with it (owner reference),
    but is deleted here too so its pods stop at once."""
    refresh = Refresh(body)
    await kube.delete_job(refresh.namespace, dispatch.job_name(refresh.name, refresh.uid))
    deleted = await RunStore(ctx.redis, refresh.uid).delete()
    log.info("deleted %s/%s: %d Redis keys removed", refresh.namespace, refresh.name, deleted)
