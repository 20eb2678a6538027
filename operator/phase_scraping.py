"""Scraping: check what can be checked, scrape, write the chunks, create the Job."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses

from redis.exceptions import RedisError

from proxyrefresh import redact
from proxyrefresh.api import Engine, Phase, ProxyRefreshSpec, dump
from proxyrefresh.constants import RUNS
from proxyrefresh.fanout import access
from proxyrefresh.fanout.store import RunStore
from proxyrefresh.netguard import AddressRefused
from proxyrefresh.operator import credentials, dispatch, kube, memory, merge, policy, scrape
from proxyrefresh.operator.apiclient import ApiError
from proxyrefresh.operator.chunking import auto_chunk_size
from proxyrefresh.operator.context import Context, Refused, redis_unavailable
from proxyrefresh.operator.phase_pending import stop
from proxyrefresh.operator.spool import RunSpool
from proxyrefresh.operator.status import progress_text
from proxyrefresh.operator.transition import (
    Refresh,
    Transition,
    owner_reference,
    reread,
)
from proxyrefresh.redis_topology import is_sentinel
from proxyrefresh.settings import RedisSettings


async def start(ctx: Context, t: Transition) -> None:
    """Scraping: check what can be checked, scrape, write the chunks, create
    the Job. Repeated after a transient error or a restart, it finds the
    chunks already written and the Job already there: never twice."""
    refresh = t.refresh
    spec = refresh.spec
    job_name = refresh.job_name
    store = ctx.store(refresh.uid)
    try:
        written = await store.items_written()
    except RedisError as exc:
        raise redis_unavailable(" while dispatching", exc) from exc
    if written is not None:
        await preflight(ctx, refresh, spec)
        candidates, chunks = written
        sources = [dump(s) for s in refresh.state.sources or []]
    else:
        try:
            found = await scrape_step(ctx, t)
            if found is None:  # still scraping: this wake said how it goes
                return
            sources = [dump(x) for x in found.sources]
            if found.failed:
                t.set(sources=sources)
                t.fail("NoCandidates", found.failure_message())
                return
            if not await reread(refresh):
                return
            if refresh.replaced_by:  # asked to stop while it scraped
                stop(ctx, t)
                return
            candidates = found.candidates
            size = await room_for(ctx, refresh, candidates, store)
            t.set(chunkSize=size)
            chunks = await write_chunks(store, candidates, size)
        except Refused:
            # What the scrape spooled goes: the others' runs need the room.
            with contextlib.suppress(RedisError):
                await store.delete()
            raise
    created = await create_job(ctx, refresh, spec, chunks)
    t.set(
        phase=Phase.DISPATCHED.value,
        jobName=job_name,
        candidates=candidates,
        totalChunks=chunks,
        completedChunks=0,
        checked=0,
        live=0,
        progress=progress_text(0, chunks),
        message=f"{candidates} candidates in {chunks} chunks",
        sources=sources,
    )
    if created:
        t.note("Dispatched", f"{candidates} candidates in {chunks} chunks, Job {job_name}")


# How long a wake waits for a scrape before it says how it goes instead.
SCRAPE_WAIT = 1.0


async def scrape_step(ctx: Context, t: Transition) -> scrape.ScrapeResult | None:
    """One wake of a scrape (operator/scrape_tasks.py): start it, write its
    guard, or say how it goes; its result once it is done, None until then."""
    refresh = t.refresh
    running = ctx.scrapes.get(refresh.uid)
    if running is None:
        spec = refresh.spec
        creds = await preflight(ctx, refresh, spec)

        async def sources(attempts: scrape.Attempts) -> scrape.ScrapeResult:
            return await scrape_sources(ctx, refresh, spec, creds, attempts)

        running = await ctx.scrapes.start(
            refresh.uid,
            ctx.scrape_slots.hold(refresh.namespace),
            sources,
            wake=lambda: ctx.subscriptions.wake(RUNS.keys(refresh.uid).events),
        )
    if not running.slot_taken.is_set():
        busy = ctx.scrape_slots.busy(refresh.namespace)
        if busy:  # else a slot came free a moment ago: the scrape takes it next
            t.set(message=f"waiting to scrape: {busy}")
        return None
    if not running.guarded.is_set():
        try:
            guard_scrape(ctx, t)
        except Refused:
            await ctx.scrapes.cancel(refresh.uid)
            raise
        guarded = running.guarded

        async def begin() -> None:  # once the guard is written
            guarded.set()

        t.after.append(begin)
        t.again = True  # the scrape begins once this is written: look again at once
        return None
    assert running.task is not None
    # Most scrapes take well under this: their result goes out in this wake.
    await asyncio.wait({running.task}, timeout=SCRAPE_WAIT)
    if not running.task.done():
        text = running.attempts.text()
        if text:
            t.set(message=redact.one_line(text))
        return None
    ctx.scrapes.finish(refresh.uid)
    try:
        return running.task.result()
    except scrape.LimitExceeded as exc:
        raise Refused(exc.reason, str(exc)) from None
    except RedisError as exc:
        if memory.out_of_memory(exc):
            raise Refused("RedisFull", memory.full_message()) from None
        raise redis_unavailable(" while scraping", exc) from exc


async def room_for(ctx: Context, refresh: Refresh, candidates: int, store: RunStore) -> int:
    """The chunk size for these candidates, once the namespace's share and
    Redis's room are known to hold them (Refused otherwise). Their spool,
    which the chunks replace, is room already taken."""
    await within_namespace_limit(ctx, refresh, candidates)
    try:
        spooled = await store.spool_bytes()
    except RedisError as exc:
        raise redis_unavailable(" while dispatching", exc) from exc
    no_room = await ctx.memory.no_room_for(candidates, held=spooled)
    if no_room:
        raise Refused("RedisFull", no_room)
    return chunk_size(refresh.spec, candidates)


async def write_chunks(store: RunStore, candidates: int, size: int) -> int:
    """The spooled candidates into the run's chunks, cut in Redis."""
    try:
        return (await store.chunk_spool(size))[1]
    except RedisError as exc:
        if memory.out_of_memory(exc):
            raise Refused("RedisFull", memory.full_message(candidates)) from None
        raise redis_unavailable(" while dispatching", exc) from exc


def chunk_size(spec: ProxyRefreshSpec, candidates: int) -> int:
    """The spec's number, or what ``auto`` picks for these candidates."""
    if isinstance(spec.chunk_size, int):
        return spec.chunk_size
    checker = spec.checker
    return auto_chunk_size(
        candidates,
        spec.parallelism,
        checker.concurrency,
        checker.timeout_seconds,
        spec.deadlines.chunk_seconds,
    )


async def within_namespace_limit(ctx: Context, refresh: Refresh, candidates: int) -> None:
    """Refused if the namespace's unfinished runs and this one would hold
    more candidates than one namespace may (its share of the shared Redis)."""
    limit = ctx.settings.namespace_max_candidates
    if ctx.peers is not None:
        items = ctx.peers(refresh.namespace, None)
    else:
        items = await kube.list_refreshes(refresh.namespace)
    held = policy.candidates_held(items, refresh.body)
    if held + candidates > limit:
        raise Refused(
            "NamespaceLimit",
            f"this namespace's unfinished refreshes hold {held} candidates; with these "
            f"{candidates} it would pass {limit}, the operator's limit per namespace "
            "(PROXYREFRESH_OPERATOR_NAMESPACE_MAX_CANDIDATES, chart value "
            "operator.limits.namespaceMaxCandidates)",
        )


def guard_scrape(ctx: Context, t: Transition) -> None:
    """Before a scrape: count the scrapes of this refresh that a process
    started and did not live to finish (an operator killed, say for memory,
    while scraping it), and fail the refresh once there were too many,
    instead of dying on it again at every start. Written in its own wake,
    before the scrape may begin, with this process's identity."""
    state = t.refresh.state
    crashes = state.scrape_crashes or 0
    by = state.scrape_by
    if by and by != ctx.process:
        crashes += 1  # the process that began the last scrape is gone
    limit = ctx.settings.scrape_crash_limit
    if crashes >= limit:
        raise Refused(
            "ScrapeCrashed",
            f"the operator stopped {crashes} times while scraping this refresh's sources "
            "(out of memory?); not tried again (PROXYREFRESH_OPERATOR_SCRAPE_CRASH_LIMIT "
            f"is {limit}); lower operator.limits.scrapeMaxBytes or split the sources",
        )
    t.set(scrapeBy=ctx.process, scrapeCrashes=crashes)


def workers_can_reach_redis(redis: RedisSettings) -> None:
    """Refused when the workers could not find the Redis primary: sentinels
    that ask for a password, which the workers are not given (it would sit
    in a tenant's namespace and let its holder reconfigure the sentinels)."""
    if is_sentinel(redis.url) and redis.sentinel_password:
        raise Refused(
            "RedisSentinelPassword",
            "the Redis sentinels ask for a password, which this operator does not hand to "
            "its workers (a tenant could reconfigure the sentinels with it): run the "
            "sentinels without one, reachable only from the operator's and the workers' "
            "pods (docs/security.md)",
        )


async def preflight(
    ctx: Context, refresh: Refresh, spec: ProxyRefreshSpec
) -> dict[int, credentials.SourceCredentials]:
    """What can be known before scraping, checked before scraping: a refresh
    that could never finish fails now, with the rule it breaks (Refused)."""
    if spec.checker.engine is Engine.MUBENG:
        raise Refused(
            "EngineUnavailable",
            "engine mubeng is not available in this build: the mubeng module could "
            "not be fetched; use engine: native",
        )
    workers_can_reach_redis(ctx.redis_settings)
    output = await kube.read_config_map(refresh.namespace, spec.output_config_map)
    if not merge.managed(output, spec.pool):
        raise Refused(
            "OutputNotManaged", merge.not_managed_message(spec.output_config_map, spec.pool)
        )
    guard = ctx.network.guard_rule()
    checked = [(f"checker.judges[{i}]", u) for i, u in enumerate(spec.checker.judges)]
    checked += [(f"checker.targets[{i}]", t.url) for i, t in enumerate(spec.checker.targets)]
    for where, url in checked:
        try:
            await guard.vet(url)
        except AddressRefused as exc:
            raise Refused("AddressRefused", f"{where}: {exc}") from None
        except OSError:
            pass  # not resolvable from here; the workers will say so
    found: dict[int, credentials.SourceCredentials] = {}
    for i, source in enumerate(spec.sources):
        ref = source.headers_secret_ref
        if ref is None:
            continue
        where = f"sources[{i}].headersSecretRef"
        if not source.url:
            raise Refused("CredentialsNotAllowed", f"{where}: only a url source sends headers")
        try:
            secret = await kube.read_secret(refresh.namespace, ref.name)
        except ApiError as exc:
            if exc.status != 403:
                raise
            raise Refused(
                "CredentialsNotAllowed",
                f"{where}: the operator may not read Secret {ref.name} "
                "(not among the chart's operator.secretNames)",
            ) from None
        if secret is None:
            raise Refused("CredentialsNotAllowed", f"{where}: Secret {ref.name} not found")
        try:
            found[i] = credentials.from_secret(secret, source.url)
        except credentials.CredentialsRefused as exc:
            raise Refused("CredentialsNotAllowed", f"{where}: {exc}") from None
    return found


async def scrape_sources(
    ctx: Context,
    refresh: Refresh,
    spec: ProxyRefreshSpec,
    creds: dict[int, credentials.SourceCredentials],
    attempts: scrape.Attempts,
) -> scrape.ScrapeResult:
    """Scrape, noting in ``attempts`` which source is being fetched and on
    which try (the loop's wakes say so in the status). A scrape stops as
    soon as it has more candidates than Redis has room for."""
    room, full = await ctx.memory.room()
    rules = dataclasses.replace(ctx.fetch_rules(), redis_room=room, redis_full=full)
    store = ctx.store(refresh.uid)
    await store.delete()  # a scrape cut short before (an operator restarted) starts over
    sink = RunSpool(store)
    return await scrape.scrape(spec.sources, refresh.namespace, rules, creds, attempts, sink)


async def create_job(ctx: Context, refresh: Refresh, spec: ProxyRefreshSpec, chunks: int) -> bool:
    """The run's Redis user and Secret, then the Job; each created if missing."""
    job_name = refresh.job_name
    owner = owner_reference(refresh)
    url = ctx.redis_settings.url
    if ctx.settings.worker_redis_acl:
        await grant(ctx, refresh)
        url = ctx.run(refresh.uid).worker_url(url, ctx.credential_key)
    await kube.create_secret(
        dispatch.redis_secret(job_name, refresh.namespace, url, owner, spec.pool, refresh.name)
    )
    manifest = dispatch.build_job(
        name=refresh.name,
        namespace=refresh.namespace,
        uid=refresh.uid,
        spec=spec,
        chunks=chunks,
        settings=ctx.settings,
        redis=ctx.redis_settings,
        network=ctx.network,
    )
    manifest["metadata"]["ownerReferences"] = [owner]
    account = ctx.settings.worker_service_account
    if account and not await kube.service_account_exists(refresh.namespace, account):
        # Not installed in this namespace: the default one, still without a token.
        manifest["spec"]["template"]["spec"].pop("serviceAccountName", None)
    return await kube.create_job(manifest)


async def grant(ctx: Context, refresh: Refresh) -> None:
    """(Re)create the run's Redis user: idempotent, repeated while following,
    so a Redis restarted without its ACLs lets the workers back in."""
    if not ctx.settings.worker_redis_acl:
        return
    try:
        await ctx.run(refresh.uid).grant(ctx.credential_key)
    except access.AclUnavailable as exc:
        raise Refused(
            "RedisAclUnavailable",
            f"{exc}, or turn per-run users off (PROXYREFRESH_OPERATOR_WORKER_REDIS_ACL=false)",
        ) from None
    except RedisError as exc:
        raise redis_unavailable("", exc) from exc
