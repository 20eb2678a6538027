"""ProxyPools: their status, and refills when consumers wear them down.

A ProxyPool is to its refreshes what a Deployment is to its ReplicaSets. One
daemon per ProxyPool listens to the pool's events channel in Redis (every
merge and every report that moves `usable` publishes there), so it learns
of a drop within moments and never scans. When `usable` falls below
`minUsable` it starts one refresh from the template, owned by the pool,
unless one is already on the way or the last started within the cooldown.

The refill's name carries the count of refills started (`<pool>-refill-N`)
and the count moves only after the create and its Event: a refresh named
for the next count is a refill whose step was cut off, and the next step
finishes it (posts the Event, which has a name of its own so a repeat is
a 409, and counts it) instead of starting another. So an operator killed
anywhere in a refill starts it once and reports it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from redis.exceptions import RedisError

from proxyrefresh import constants as c
from proxyrefresh import redact
from proxyrefresh.api import (
    STALLED,
    Phase,
    ProxyPoolSpec,
    ProxyPoolStatus,
    Scoring,
    dump,
    true_condition,
)
from proxyrefresh.fanout.access import AclUnavailable
from proxyrefresh.operator import kube, policy, pool_access
from proxyrefresh.operator.apiclient import ApiError
from proxyrefresh.operator.metrics import Metrics
from proxyrefresh.operator.status import (
    changes,
    now_iso,
    parse_time,
    set_condition,
)
from proxyrefresh.operator.subscriptions import Subscriptions
from proxyrefresh.pool import AsyncPool, PoolStats
from proxyrefresh.redact import redis_problem

log = logging.getLogger("proxyrefresh.operator.pools")
STATUS_INTERVAL = 1.0  # at most one status patch a second per pool
CHECK_INTERVAL = 30.0  # a look without an event, in case one was missed
ACCESS_INTERVAL = pool_access.ACCESS_INTERVAL
NO_USERS = (
    "this operator makes no Redis users (PROXYREFRESH_OPERATOR_WORKER_REDIS_ACL is false, "
    "chart worker.redisAcl): give consumers a user of your own (proxyrefresh pool grant)"
)
REFILL_NAME_ROOM = 63 - len("-refill-") - 6


def status_fields(
    stats: PoolStats, spec: ProxyPoolSpec, old: dict[str, Any], generation: int | None
) -> dict[str, Any]:
    """The pool's status from its stats: counts, and the conditions Ready
    (usable proxies to hand out) and BelowMinimum (fewer than minUsable)."""
    fields: dict[str, Any] = {
        "size": stats.size,
        "usable": stats.usable,
        "protocols": {k: v for k, v in stats.protocols.items() if v},
        "anonymity": {k: v for k, v in stats.anonymity.items() if v},
    }
    ready = stats.usable > 0 and stats.usable >= spec.min_usable
    conditions = set_condition(
        old.get("conditions"),
        "Ready",
        ready,
        "Usable" if ready else "TooFewUsable",
        f"{stats.usable} usable of {stats.size}, minUsable {spec.min_usable}",
        generation,
    )
    below = stats.usable < spec.min_usable
    conditions = set_condition(
        conditions,
        "BelowMinimum",
        below,
        "BelowMinimum" if below else "AtLeastMinimum",
        f"{stats.usable} usable, minUsable {spec.min_usable}",
        generation,
    )
    if true_condition(old, STALLED):
        conditions = set_condition(conditions, STALLED, False, "Resumed", "", generation)
    fields["conditions"] = conditions
    fields["observedGeneration"] = generation
    return fields


def access_condition(
    conditions: list[dict[str, Any]], problem: str | None, generation: int | None
) -> list[dict[str, Any]]:
    """Condition AccessReady of a pool with spec.access: its consumer user
    exists (and its Secret), or why not."""
    if problem is None:
        return set_condition(conditions, "AccessReady", True, "UserKept", "", generation)
    message = redact.one_line(problem)
    return set_condition(conditions, "AccessReady", False, "AccessUnavailable", message, generation)


def stalled_fields(
    old: dict[str, Any], reason: str, message: str, generation: int | None
) -> dict[str, Any]:
    """Condition Stalled: the counts are as old as the last look that went
    through, and this is why (the next look that does clears it)."""
    conditions = set_condition(
        old.get("conditions"), STALLED, True, reason, redact.one_line(message), generation
    )
    return {"conditions": conditions}


@dataclass(frozen=True)
class Refill:
    start: bool
    why: str


def refill_decision(
    spec: ProxyPoolSpec,
    usable: int,
    status: dict[str, Any],
    unfinished: list[str],
    now: float,
) -> Refill:
    """Whether to start a refill now, and why (not). Pure."""
    if spec.min_usable == 0 or usable >= spec.min_usable:
        return Refill(False, f"{usable} usable, minUsable {spec.min_usable}")
    if unfinished:
        return Refill(False, f"refresh {', '.join(unfinished)} is on the way")
    last = parse_time(status.get("lastRefillAt"))
    if last is not None and now - last < spec.refill_cooldown_seconds:
        left = spec.refill_cooldown_seconds - (now - last)
        return Refill(False, f"cooling down for {left:.0f}s more")
    return Refill(True, f"{usable} usable, fewer than minUsable {spec.min_usable}")


def refill_name(pool: str, number: int) -> str:
    return f"{pool[:REFILL_NAME_ROOM].rstrip('-')}-refill-{number}"


def refill_manifest(
    body: dict[str, Any], spec: ProxyPoolSpec, number: int, why: str
) -> dict[str, Any]:
    """The refresh a refill creates: the template, the pool, owned by it,
    and why it was started (for the Event, even one posted after a restart)."""
    meta = body["metadata"]
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.KIND,
        "metadata": {
            "name": refill_name(meta["name"], number),
            "namespace": meta["namespace"],
            "labels": {c.LABEL_POOL: meta["name"], c.LABEL_REFILL: "true"},
            "annotations": {c.ANNOTATION_REFILL_REASON: why},
            "ownerReferences": [
                {
                    "apiVersion": c.API_VERSION,
                    "kind": c.POOL_KIND,
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": dump(spec.refresh_spec(meta["name"])),
    }


def refill_event(body: dict[str, Any], refresh: dict[str, Any], when: str) -> dict[str, Any]:
    """The pool's Event for a refill it started. Its name is the refill's and
    the pool's uid, so posting it twice creates it once (409), and a pool
    made again under the same name does not collide with the old one's."""
    meta, started = body["metadata"], refresh["metadata"]
    why = (started.get("annotations") or {}).get(c.ANNOTATION_REFILL_REASON, "")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{started['name']}.{meta['uid'][:8]}",
            "namespace": meta["namespace"],
        },
        "involvedObject": {
            "apiVersion": c.API_VERSION,
            "kind": c.POOL_KIND,
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
        },
        "type": "Normal",
        "reason": "Refill",
        "message": f"{why}: started refresh {started['name']}"
        if why
        else f"started refresh {started['name']}",
        "source": {"component": c.EVENT_COMPONENT},
        "reportingComponent": c.EVENT_COMPONENT,
        "firstTimestamp": when,
        "lastTimestamp": when,
        "count": 1,
    }


def pool_spec(body: dict[str, Any] | None) -> ProxyPoolSpec | None:
    """The ProxyPool's spec, or None if there is none (or it does not parse:
    the API server validated it, so only a newer schema gets here)."""
    if body is None:
        return None
    try:
        return ProxyPoolSpec.model_validate(body.get("spec") or {})
    except ValidationError:
        return None


def scoring_of(body: dict[str, Any] | None) -> tuple[Scoring, int | None]:
    """The pool's scoring and maximum age; the defaults without a ProxyPool."""
    spec = pool_spec(body)
    if spec is None:
        return Scoring(), None
    return spec.scoring, spec.max_age_seconds


@dataclass
class PoolWatch:
    """What one pool's daemon needs: Redis, and its metrics."""

    redis: Any
    metrics: Metrics = field(default_factory=Metrics)
    subscriptions: Subscriptions | None = None  # the operator's; None: one of its own
    # What spec.access's user is made with: the key its password derives
    # from and the URL its own is built on (None: pools get no user).
    access_key: str | None = None
    redis_url: str = ""
    _access_at: float = field(default=-ACCESS_INTERVAL, init=False)
    access_problem: str | None = field(default=None, init=False)  # why there is no user
    _access_kept: bool = field(default=False, init=False)  # once: its Secret was seen to

    def pool(self, body: dict[str, Any]) -> AsyncPool:
        meta = body["metadata"]
        return AsyncPool(self.redis, meta["name"], meta["namespace"])

    async def sync(self, body: dict[str, Any], spec: ProxyPoolSpec) -> None:
        """One look at the pool and one status write, if anything moved: the
        counts and conditions, the last refresh merged (the merge leaves it
        in Redis: only this loop writes the ProxyPool's status), and the
        refill this look started, if it started one."""
        pool = self.pool(body)
        stats = await pool.stats()
        last = await pool.last_merge()
        old = dict(body.get("status") or {})
        generation = body["metadata"].get("generation")
        fields = status_fields(stats, spec, old, generation)
        if spec.access is not None:
            problem = self.access_problem if self.access_key is not None else NO_USERS
            fields["conditions"] = access_condition(fields["conditions"], problem, generation)
        if last is not None:
            fields |= {
                "lastRefresh": last.refresh,
                "lastRefreshAt": last.at,
                "exported": last.exported,
            }
        fields |= await self.maybe_refill(body, spec, stats.usable)
        await self.write(body, old, fields)

    async def write(
        self, body: dict[str, Any], old: dict[str, Any], fields: dict[str, Any]
    ) -> None:
        """The one status patch of a look, checked against the typed status."""
        meta = body["metadata"]
        delta = changes(old, fields)
        if delta:
            ProxyPoolStatus.model_validate({**old, **delta})
            await kube.patch_pool_status(meta["namespace"], meta["name"], delta)
            self.metrics.patches.labels("pool").inc()
        self.metrics.pool_written(meta["namespace"], meta["name"], {**old, **fields})

    async def maybe_refill(
        self, body: dict[str, Any], spec: ProxyPoolSpec, usable: int
    ) -> dict[str, Any]:
        """Start a refill if the pool needs one; the status fields that count
        it (none if it started none)."""
        meta, status = body["metadata"], dict(body.get("status") or {})
        if spec.min_usable == 0 or usable >= spec.min_usable:
            return {}  # nothing to refill: no need to list the namespace's refreshes
        items = [
            it
            for it in await kube.list_refreshes(meta["namespace"])
            if policy.pool_of(it) == meta["name"]
        ]
        number = int(status.get("refillsStarted") or 0) + 1
        name = refill_name(meta["name"], number)
        started = next((it for it in items if it["metadata"]["name"] == name), None)
        if started is None:
            unfinished = [
                it["metadata"]["name"]
                for it in items
                if (it.get("status") or {}).get("phase") not in (Phase.COMPLETE, Phase.FAILED)
                and not it["metadata"].get("deletionTimestamp")
            ]
            decision = refill_decision(spec, usable, status, unfinished, time.time())
            if not decision.start:
                log.debug(
                    "pool %s/%s: no refill: %s", meta["namespace"], meta["name"], decision.why
                )
                return {}
            started = refill_manifest(body, spec, number, decision.why)
            await kube.create_refresh(started)
        return await self.count_refill(body, started, number)

    async def count_refill(
        self, body: dict[str, Any], refresh: dict[str, Any], number: int
    ) -> dict[str, Any]:
        """Report a refill just created, or one a cut-off step created and
        did not count, and the fields that count it: each part is the same
        however often. The Event goes before the count: a step cut off
        between them finds the refill uncounted and posts it again (a 409)."""
        meta = body["metadata"]
        when = refresh["metadata"].get("creationTimestamp") or now_iso()
        if await kube.create_event(refill_event(body, refresh, when)):
            log.info(
                "pool %s/%s: started refresh %s",
                meta["namespace"],
                meta["name"],
                refresh["metadata"]["name"],
            )
        return {
            "refillsStarted": number,
            "lastRefill": refresh["metadata"]["name"],
            "lastRefillAt": when,
        }

    async def run(self, body: Any, stopped: Any) -> None:
        """Until the daemon is stopped: on each event of the pool (at most a
        status patch a second) and every CHECK_INTERVAL, sync and refill."""
        meta = body["metadata"]
        where = f"pool {meta['namespace']}/{meta['name']}"
        kube.writes(c.POOL_PLURAL, meta["namespace"], meta["name"])  # this loop, nothing else
        subscriptions = self.subscriptions or Subscriptions(self.redis)
        async with subscriptions.follow(self.pool(body).calls.keys.events) as feed:
            while not stopped:
                try:
                    await self.step(body)
                    last = time.monotonic()
                    dirty = False
                    while not stopped:
                        dirty = await feed.wait(STATUS_INTERVAL) or dirty
                        since = time.monotonic() - last
                        if (dirty and since >= STATUS_INTERVAL) or since >= CHECK_INTERVAL:
                            await self.step(body)
                            last, dirty = time.monotonic(), False
                        dirty = await self.keep_access(body) or dirty
                except (RedisError, OSError) as exc:
                    self.metrics.redis_errors.labels("pool").inc()
                    log.warning("%s: Redis: %s; again in 2s", where, exc)
                    await self.stall(
                        body, "RedisUnavailable", f"Redis unavailable: {redis_problem(exc)}"
                    )
                    await asyncio.sleep(2)
                except ApiError as exc:
                    log.warning("%s: Kubernetes API: %s", where, kube.describe(exc))
                    await asyncio.sleep(2)

    async def stall(self, body: Any, reason: str, message: str) -> None:
        """Say why the status stands still; the same cause again writes nothing
        (and a write the API refuses is left to the next try)."""
        meta, old = body["metadata"], dict(body.get("status") or {})
        delta = changes(old, stalled_fields(old, reason, message, meta.get("generation")))
        if delta:
            with contextlib.suppress(ApiError, OSError):
                await kube.patch_pool_status(meta["namespace"], meta["name"], delta)
                self.metrics.patches.labels("pool").inc()

    async def step(self, body: dict[str, Any]) -> None:
        spec = pool_spec(dict(body))
        if spec is None:
            return
        await self.keep_access(body)
        with self.metrics.reconcile.labels("pool").time():
            await self.sync(dict(body), spec)

    async def keep_access(self, body: Any) -> bool:
        """Every ACCESS_INTERVAL: the pool's consumer user, made again if
        Redis forgot it (pool_access.py). Whether what the pool's condition
        AccessReady says changed (the next look writes it)."""
        if self.access_key is None or time.monotonic() - self._access_at < ACCESS_INTERVAL:
            return False
        spec = pool_spec(dict(body))
        if spec is None or spec.access is None:
            return False
        self._access_at = time.monotonic()
        meta, before = body["metadata"], self.access_problem
        try:
            key, url, first = self.access_key, self.redis_url, not self._access_kept
            if await pool_access.keep(self.redis, dict(body), spec, key, url, first):
                log.info("pool %s/%s: made its consumer user", meta["namespace"], meta["name"])
            self.access_problem, self._access_kept = None, True
        except AclUnavailable as exc:
            if before != str(exc):
                log.warning("pool %s/%s: %s", meta["namespace"], meta["name"], exc)
            self.access_problem = str(exc)
        return self.access_problem != before
