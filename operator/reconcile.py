"""One refresh, one step at a time, from whatever the status and Redis say.

The timer handler calls :func:`step` every couple of seconds while a refresh
is not finished. A step reads the world (status, Redis, the Job), makes one
transition, builds its status in memory and writes it once (``Transition``,
``commit``); a step that can move on at once does (Pending to Scraping to
Dispatched, Merging to Complete). So an operator killed at any point
resumes where it was: the Job's name is derived from the
refresh (never a second Job) and the pool remembers which refreshes it
merged (never a second merge).

    Pending ──► Scraping ──► Dispatched ──► Processing ──► Merging ──► Complete
       │ (Forbid: waits)        │ Job Failed / state lost ──────────► Failed
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.rest import ApiException
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from proxyrefresh import redact
from proxyrefresh.api import (
    STALLED,
    ConcurrencyPolicy,
    CredentialsExport,
    Engine,
    Phase,
    ProxyRefreshSpec,
    ProxyRefreshStatus,
    Scoring,
    dump,
    finished,
    problems,
    true_condition,
)
from proxyrefresh.fanout import access
from proxyrefresh.fanout.job import job_end
from proxyrefresh.fanout.store import RunStore, StateLost
from proxyrefresh.netguard import AddressRefused
from proxyrefresh.operator import credentials, dispatch, kube, memory, merge, policy, pools, scrape
from proxyrefresh.operator.chunking import auto_chunk_size
from proxyrefresh.operator.metrics import Metrics
from proxyrefresh.operator.scrape_slots import ScrapeSlots
from proxyrefresh.operator.status import (
    changes,
    now_iso,
    progress_fields,
    progress_text,
    set_condition,
)
from proxyrefresh.operator.subscriptions import Subscriptions
from proxyrefresh.operator.turns import PoolTurns
from proxyrefresh.pool import AsyncPool, PoolEntry
from proxyrefresh.redact import redis_problem
from proxyrefresh.settings import NetworkSettings, OperatorSettings, RedisSettings

log = logging.getLogger("proxyrefresh.operator")


@dataclass
class Context:
    """What every step needs; built once at operator start-up."""

    settings: OperatorSettings
    redis_settings: RedisSettings
    redis: Redis
    network: NetworkSettings
    events: Any = None  # callable(reason, message, warning=False), set per call
    # Status patches sent by this operator (bench/refresh_e2e.py reads the log line).
    patches: Counter[str] = field(default_factory=Counter)
    metrics: Metrics = field(default_factory=Metrics)
    # Every refresh of a pool (or, for pool None, of the namespace), as
    # kopf's index has them (handlers.py); None (no kopf, as in the unit
    # tests): listed from the API.
    peers: Callable[[str, str | None], list[dict[str, Any]]] | None = None
    # The one pub/sub connection every refresh and pool follows its channel on.
    subscriptions: Subscriptions = field(kw_only=True)
    # How full Redis is (looked at once every few seconds, for every refresh).
    memory: memory.RedisMemory = field(kw_only=True)
    # How many refreshes scrape at once (each holds its sources in memory).
    scrape_slots: ScrapeSlots = field(kw_only=True)
    # Wakes the refreshes waiting for a pool when one of its refreshes ends.
    pool_turns: PoolTurns = field(kw_only=True)
    # This operator process, in a refresh's status while it scrapes it
    # (guard_scrape): a different one there means that one died scraping.
    process: str = field(default_factory=lambda: f"{socket.gethostname()}/{time.time_ns()}")

    def store(self, uid: str) -> RunStore:
        return RunStore(self.redis, uid, self.redis_settings.key_ttl_seconds)

    def pool(self, namespace: str, name: str, scoring: Scoring | None = None) -> AsyncPool:
        return AsyncPool(self.redis, name, namespace, scoring)

    @property
    def credential_key(self) -> str:
        """What per-run Redis passwords are derived from (fanout.access)."""
        return self.settings.worker_credential_key or self.redis_settings.url

    def fetch_rules(self) -> scrape.FetchRules:
        s = self.settings
        return scrape.FetchRules(
            guard=self.network.guard_rule(),
            timeout=s.source_timeout_seconds,
            retries=s.source_retries,
            max_bytes=s.source_max_bytes,
            total_bytes=s.scrape_max_bytes,
            max_candidates=s.max_candidates,
            concurrency=s.scrape_concurrency,
        )


class Refused(Exception):
    """A refresh that can never run: it fails with this reason and message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Unavailable(Exception):
    """Redis or the Kubernetes API did not answer: a retry may cure it. The
    refresh says so in condition Stalled while the step is retried."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def redis_unavailable(while_: str, exc: RedisError) -> Unavailable:
    return Unavailable("RedisUnavailable", f"Redis unavailable{while_}: {redis_problem(exc)}")


@dataclass
class Refresh:
    body: dict[str, Any]
    # Pacing (operator/driver.py): a write that only moves the counters waits
    # until then; written_at is when the last write landed (monotonic).
    not_before: float = 0.0
    written_at: float = 0.0

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
    def pool(self) -> str:
        """The pool it names, read without validating the spec (a refresh
        with an invalid spec is still counted, as Failed)."""
        return str((self.body.get("spec") or {}).get("pool") or "default")

    @property
    def spec(self) -> ProxyRefreshSpec:
        return ProxyRefreshSpec.model_validate(self.body.get("spec") or {})

    @property
    def job_name(self) -> str:
        """The Job's name, as recorded, else derived (never a second Job)."""
        return str(self.status.get("jobName") or dispatch.job_name(self.name, self.uid))


async def patch(ctx: Context, refresh: Refresh, fields: dict[str, Any]) -> None:
    """Patch the status and keep the local copy in step."""
    delta = changes(refresh.status, fields)
    if not delta:
        return
    delta["observedGeneration"] = refresh.generation
    # The typed status is the contract: a write it does not describe is a bug here.
    ProxyRefreshStatus.model_validate({**refresh.status, **delta})
    if "phase" not in delta:  # progress: at most about one write a second
        await asyncio.sleep(max(0.0, refresh.not_before - time.monotonic()))
    await kube.patch_status(refresh.namespace, refresh.name, delta)
    refresh.written_at = time.monotonic()
    ctx.patches["status"] += 1
    refresh.body["status"] = {**refresh.status, **delta}
    ctx.metrics.patches.labels("refresh").inc()
    ctx.metrics.refresh_written(refresh.uid, refresh.namespace, refresh.pool, refresh.status)


@dataclass
class Transition:
    """What one step changes, built in memory and written once (as
    kubernetes-sigs/jobset does): the status fields, the Events to post once
    the write landed, and work to do after it (pruning the history)."""

    refresh: Refresh
    fields: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[str, str, bool]] = field(default_factory=list)
    after: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    failing: bool = False

    @property
    def status(self) -> dict[str, Any]:
        """The status as it will be once written."""
        return {**self.refresh.status, **self.fields}

    def set(self, **fields: Any) -> None:
        self.fields.update(fields)

    def condition(self, kind: str, status: bool, reason: str, message: str) -> None:
        conditions = set_condition(
            self.status.get("conditions"), kind, status, reason, message, self.refresh.generation
        )
        self.fields["conditions"] = conditions

    def note(self, reason: str, message: str, warning: bool = False) -> None:
        self.events.append((reason, message, warning))

    def fail(self, reason: str, message: str) -> None:
        message = redact.one_line(message)
        self.condition("Failed", True, reason, message)
        self.condition("Complete", False, reason, message)
        self.set(phase=Phase.FAILED.value, message=message, completedAt=now_iso())
        if not self.status.get("totalChunks"):
            # "scraping" or "waiting" would read as if it still did that.
            self.set(progress="-")
        self.note(reason, message, warning=True)
        self.failing = True


def note(ctx: Context, reason: str, message: str, warning: bool = False) -> None:
    log.info("%s: %s", reason, message)
    if ctx.events is not None:
        ctx.events(reason, message, warning)


async def commit(ctx: Context, t: Transition) -> None:
    """Write the transition once; post its Events only if the write landed.
    A Failed is not written over a refresh that ended meanwhile (a Replace by
    another refresh fails it and deletes its keys while its own step may be
    running: that step's StateLost must not overwrite the reason Replaced)."""
    refresh = t.refresh
    if t.failing:
        with contextlib.suppress(RedisError):
            await access.revoke(ctx.redis, refresh.uid)
        if await ended_meanwhile(refresh):
            return
    await patch(ctx, refresh, t.fields)
    for reason, message, warning in t.events:
        note(ctx, reason, message, warning)
    for work in t.after:
        await work()
    if finished(t.fields.get("phase")):
        log.info(
            "%s/%s: status patches sent by this operator so far: %d",
            refresh.namespace,
            refresh.name,
            ctx.patches["status"],
        )


async def fail(ctx: Context, refresh: Refresh, reason: str, message: str) -> None:
    """A step of its own that only fails the refresh."""
    t = Transition(refresh)
    t.fail(reason, message)
    await commit(ctx, t)


MERGE_READ_ITEMS = 4096  # results read from Redis per round trip while merging

# Phases a step may move on from at once, in the same handler call.
MOVES_ON = {Phase.PENDING.value, Phase.SCRAPING.value, Phase.MERGING.value}


async def run_steps(ctx: Context, refresh: Refresh) -> None:
    """Run transitions until one leaves the refresh waiting (for the pool,
    the Job, or nothing: it ended); each writes the status once. The caller
    keeps ``refresh``: its status is kept up to date with every write, so a
    caller that steps again needs no re-read."""
    try:
        refresh.spec  # noqa: B018 - validate before anything else
    except ValidationError as exc:
        await fail(ctx, refresh, "InvalidSpec", problems(exc))
        return
    for _ in range(4):
        before = refresh.status.get("phase")
        t = Transition(refresh)
        try:
            await advance(ctx, t)
        except Refused as exc:
            t.fail(exc.reason, str(exc))
        except ApiException as exc:
            if not kube.permanent(exc):
                why = f"Kubernetes API: {kube.describe(exc)}"
                raise await stall(ctx, refresh, "ApiUnavailable", why) from None
            # A permanent answer: retrying would fail the same way, forever.
            t.fail("ApiError", f"the Kubernetes API refused: {kube.describe(exc)}")
        except Unavailable as exc:
            raise await stall(ctx, refresh, exc.reason, str(exc)) from exc.__cause__
        except Exception as exc:
            # Not the refresh's fault, and its text may quote what a source
            # held: the status names the kind of failure, the log the rest.
            step = before or "first"
            why = f"the {step} step failed ({type(exc).__name__}): see the operator's log"
            await stall(ctx, refresh, "StepFailed", why)
            raise
        if true_condition(t.status, STALLED):
            t.condition(STALLED, False, "Resumed", "")
        await commit(ctx, t)
        after = refresh.status.get("phase")
        if after == before or after not in MOVES_ON:
            return


async def advance(ctx: Context, t: Transition) -> None:
    """The one transition the refresh's phase calls for."""
    refresh = t.refresh
    phase = refresh.status.get("phase")
    if not phase:  # first sight: PHASE is never blank
        t.set(phase=Phase.PENDING.value, progress="pending")
    elif phase == Phase.PENDING:
        await admit(ctx, t)
    elif phase == Phase.SCRAPING:
        await start(ctx, t)
    elif phase in (Phase.DISPATCHED, Phase.PROCESSING):
        await follow(ctx, t)
    elif phase == Phase.MERGING:
        await finish(ctx, t)


# --- Pending -----------------------------------------------------------------


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


# --- Scraping ------------------------------------------------------------------


async def start(ctx: Context, t: Transition) -> None:
    """Scraping: check what can be checked, scrape, write the chunks, create
    the Job. Repeated after a transient error or a restart, it finds the
    chunks already written and the Job already there: never twice."""
    refresh = t.refresh
    spec = refresh.spec
    job_name = refresh.job_name
    store = ctx.store(refresh.uid)
    creds = await preflight(ctx, refresh, spec)
    try:
        written = await store.items_written()
    except RedisError as exc:
        raise redis_unavailable(" while dispatching", exc) from exc
    if written is not None:
        candidates, chunks = written
        sources = list(refresh.status.get("sources") or [])
    else:
        busy = ctx.scrape_slots.busy(refresh.namespace)
        if busy:
            await patch(ctx, refresh, {"message": f"waiting to scrape: {busy}"})
        async with ctx.scrape_slots.hold(refresh.namespace):
            await guard_scrape(ctx, refresh)
            try:
                found = await scrape_reporting(ctx, refresh, spec, creds)
            except scrape.LimitExceeded as exc:
                raise Refused(exc.reason, str(exc)) from None
        sources = [dump(x) for x in found.sources]
        if found.failed:
            t.set(sources=sources)
            t.fail("NoCandidates", found.failure_message())
            return
        if await ended_meanwhile(refresh):
            return
        candidates = len(found.candidates)
        await within_namespace_limit(ctx, refresh, candidates)
        no_room = await ctx.memory.no_room_for(candidates)
        if no_room:
            raise Refused("RedisFull", no_room)
        size = chunk_size(spec, candidates)
        # Items made a chunk at a time as they are written: a big run is
        # never held twice (proxies and their JSON) in the operator.
        batches = (
            [p.to_item() for p in chunk] for chunk in dispatch.chunked(found.candidates, size)
        )
        t.set(chunkSize=size)
        try:
            chunks = await store.write_chunks(batches)
        except RedisError as exc:
            if memory.out_of_memory(exc):
                # What was written goes: the others' runs need the room.
                with contextlib.suppress(RedisError):
                    await store.delete()
                raise Refused("RedisFull", memory.full_message(candidates)) from None
            raise redis_unavailable(" while dispatching", exc) from exc
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


async def guard_scrape(ctx: Context, refresh: Refresh) -> None:
    """Before a scrape: count the scrapes of this refresh that a process
    started and did not live to finish (an operator killed, say for memory,
    while scraping it), and fail the refresh once there were too many,
    instead of dying on it again at every start. Written once, before the
    scrape, with this process's identity."""
    status = refresh.status
    crashes = int(status.get("scrapeCrashes") or 0)
    by = status.get("scrapeBy")
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
    await patch(ctx, refresh, {"scrapeBy": ctx.process, "scrapeCrashes": crashes})


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
        except ApiException as exc:
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


async def scrape_reporting(
    ctx: Context,
    refresh: Refresh,
    spec: ProxyRefreshSpec,
    creds: dict[int, credentials.SourceCredentials],
) -> scrape.ScrapeResult:
    """Scrape, and while it takes long say in the status which source is
    being fetched and on which attempt. A scrape stops as soon as it has
    more candidates than Redis has room for."""
    attempts = scrape.Attempts()
    room, full = await ctx.memory.room()
    rules = dataclasses.replace(ctx.fetch_rules(), redis_room=room, redis_full=full)
    async with reporting(ctx, refresh, attempts):
        return await scrape.scrape(spec.sources, refresh.namespace, rules, creds, attempts)


@contextlib.asynccontextmanager
async def reporting(
    ctx: Context, refresh: Refresh, attempts: scrape.Attempts
) -> AsyncIterator[None]:
    async def loop() -> None:
        while True:
            await asyncio.sleep(ctx.settings.scrape_report_seconds)
            text = attempts.text()
            if text:
                with contextlib.suppress(ApiException):
                    await patch(ctx, refresh, {"message": redact.one_line(text)})

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def create_job(ctx: Context, refresh: Refresh, spec: ProxyRefreshSpec, chunks: int) -> bool:
    """The run's Redis user and Secret, then the Job; each created if missing."""
    job_name = refresh.job_name
    owner = owner_reference(refresh)
    url = ctx.redis_settings.url
    if ctx.settings.worker_redis_acl:
        await grant(ctx, refresh)
        url = access.run_url(url, refresh.uid, ctx.credential_key)
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
        await access.grant(ctx.redis, refresh.uid, ctx.credential_key)
    except access.AclUnavailable as exc:
        raise Refused("RedisAclUnavailable", str(exc)) from None
    except RedisError as exc:
        raise redis_unavailable("", exc) from exc


async def ended_meanwhile(refresh: Refresh) -> bool:
    """Whether the refresh ended (or went) while this step ran: a newer one
    with concurrencyPolicy Replace may have failed it meanwhile. Then the
    step must neither start a Job nor write a Failed of its own."""
    current = await kube.get_refresh(refresh.namespace, refresh.name)
    if current is not None and current["metadata"]["uid"] != refresh.uid:
        current = None  # deleted and created again under the same name
    phase = ((current or {}).get("status") or {}).get("phase")
    if current is None or finished(phase):
        log.info(
            "%s/%s ended meanwhile (%s); this step stops",
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


async def stall(ctx: Context, refresh: Refresh, reason: str, message: str) -> Exception:
    """Say in condition Stalled (and once in an Event) why the refresh does
    not move while its step is retried; the error for the driver to retry
    on. The same cause again writes nothing; a write that fails (the API
    away too) is left to the next retry."""
    t = Transition(refresh)
    message = redact.one_line(message)
    was = true_condition(refresh.status, STALLED)
    t.condition(STALLED, True, reason, message)
    if was is None or was.get("reason") != reason:
        t.note(reason, message, warning=True)
    with contextlib.suppress(ApiException, OSError):
        await commit(ctx, t)
    return kopf_temporary(message)


def kopf_temporary(message: str) -> Exception:
    import kopf

    return kopf.TemporaryError(redact.one_line(message), delay=5)


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


# --- Dispatched / Processing ------------------------------------------------


async def follow(ctx: Context, t: Transition) -> None:
    """Progress from Redis; Merging once the Job finished."""
    refresh = t.refresh
    store = ctx.store(refresh.uid)
    job_name = refresh.job_name
    job = await kube.read_job(refresh.namespace, job_name)
    try:
        progress = await store.progress()
        await store.touch()
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


# --- Merging -------------------------------------------------------------------


async def finish(ctx: Context, t: Transition) -> None:
    """Merge into the pool, then Complete (only now) or Failed."""
    refresh = t.refresh
    spec = refresh.spec
    job_name = refresh.job_name
    job = await kube.read_job(refresh.namespace, job_name)
    end = job_end(job)
    store = ctx.store(refresh.uid)
    try:
        progress = await store.progress()
    except StateLost as exc:
        t.fail("StateLost", f"{exc}; nothing to merge")
        return
    # Streamed: a few chunks at a time are read, counted and merged, so a
    # run of any size merges in bounded memory (found keeps counts only).
    found = merge.Tally()

    # About MERGE_READ_ITEMS results a read, whatever the chunk size (a
    # status from before chunkSize was recorded: 64 chunks, as it was).
    size = int(refresh.status.get("chunkSize") or 0)
    per_read = max(1, MERGE_READ_ITEMS // size) if size else 64

    async def results() -> AsyncIterator[tuple[str, bool, PoolEntry | None]]:
        async for _, chunk in store.iter_results(batch=per_read):
            for item in merge.tally_chunk(found, chunk, spec.filter):
                yield item

    include = spec.output.credentials is CredentialsExport.INCLUDE
    # A ProxyPool, if there is one, says how the pool scores and ages.
    pool_body = await kube.get_pool(refresh.namespace, spec.pool)
    scoring, max_age = pools.scoring_of(pool_body)
    pool = ctx.pool(refresh.namespace, spec.pool, scoring)
    try:
        merged = await pool.merge(refresh.uid, results(), ctx.settings.pool_ttl_seconds, max_age)
        best = await pool.entries(limit=spec.output.max_bytes // 100)
    except RedisError as exc:
        raise redis_unavailable(" while merging", exc) from exc
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
    # The ProxyPool names this refresh before the refresh says Complete: a
    # reader who sees Complete finds the pool's status already moved, and an
    # operator stopped in between repeats this step (the merge is keyed by
    # the refresh's uid) instead of never noting it.
    await pools.note_refresh(pool_body, refresh.name, len(exported))
    await store.mark_finished()
    await access.revoke(ctx.redis, refresh.uid)
    t.set(**progress_fields(refresh.status, progress, job))
    t.set(
        checked=found.checked,
        live=found.live,
        usable=found.usable,
        unchecked=found.unchecked,
        poolSize=merged.size,
        poolUsable=merged.usable,
        exported=len(exported),
        anonymity={
            level: found.anonymity.get(level, 0) for level in ("transparent", "anonymous", "elite")
        },
        completedAt=now_iso(),
    )
    # Once the status says how it ended (a repeated merge step would find
    # nothing to count): the chunks and results go, the rest soon after.
    t.after.append(lambda: store.retire(ctx.settings.finished_key_ttl_seconds))
    t.after.append(lambda: prune_history(ctx, refresh))
    if not end.succeeded:
        t.fail(
            end.reason or "JobFailed",
            f"Job {job_name} failed ({end.reason}: {end.message}); merged what finished: "
            f"{found.usable} usable of {found.checked} checked",
        )
        return
    summary = (
        f"{found.usable} usable of {found.live} live, {found.checked} checked; "
        f"pool {spec.pool} holds {merged.size}, {len(exported)} of them in ConfigMap "
        f"{spec.output_config_map}"
    )
    hidden = merge.withheld(exported)
    if hidden and spec.output.credentials is CredentialsExport.OMIT:
        summary += f" ({hidden} with credentials: passwords only in the Redis pool)"
    degraded = found.usable < spec.min_usable
    t.condition(
        "Degraded",
        degraded,
        "TooFewUsable" if degraded else "EnoughUsable",
        f"{found.usable} usable, minUsable {spec.min_usable}",
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


async def cleanup(ctx: Context, body: dict[str, Any]) -> None:
    """On deletion: the Redis keys go now; the Job goes with it (owner reference),
    but is deleted here too so its pods stop at once."""
    refresh = Refresh(body)
    await kube.delete_job(refresh.namespace, refresh.job_name)
    await access.revoke(ctx.redis, refresh.uid)
    deleted = await ctx.store(refresh.uid).delete()
    ctx.metrics.refresh_gone(refresh.uid)
    log.info("deleted %s/%s: %d Redis keys removed", refresh.namespace, refresh.name, deleted)
