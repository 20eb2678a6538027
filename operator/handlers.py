"""The kopf handlers: thin wrappers that hand the resource to reconcile.

Kopf's own bookkeeping (progress, last-handled state, the finalizer) lives
in annotations under our API group, so nothing of it lands in (or is pruned
from) the status our schema describes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
from typing import Any

import kopf

from proxyrefresh import constants as c
from proxyrefresh.api import Phase
from proxyrefresh.operator import (
    apiclient,
    driver,
    kube,
    memory,
    policy,
    pool_access,
    pools,
    reconcile,
    viewer_access,
)
from proxyrefresh.operator.context import Context
from proxyrefresh.operator.scrape_slots import ScrapeSlots
from proxyrefresh.operator.settings import OperatorSettings
from proxyrefresh.operator.subscriptions import Subscriptions
from proxyrefresh.operator.turns import PoolTurns
from proxyrefresh.settings import NetworkSettings, RedisSettings

ACTIVE = {p.value for p in Phase if not p.terminal}


def active(**kwargs: Any) -> bool:
    status = kwargs.get("status") or {}
    return status.get("phase", Phase.PENDING.value) in ACTIVE


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = c.FINALIZER
    # No CRD/namespace scanning (and no rights for it) unless namespaces are
    # given as globs, which kopf resolves by watching namespaces.
    globs = any(set(ns) & set("*?[!") for ns in OperatorSettings.from_env().namespaces)
    settings.scanning.disabled = not globs
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=c.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=c.GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # our own Events only
    # Events on refreshes come from the operator, as the pools' do, not "kopf".
    settings.posting.reporting_component = c.EVENT_COMPONENT
    settings.posting.reporting_instance = socket.gethostname()  # the pod's name
    settings.posting.event_name_prefix = "proxyrefresh-"
    # A deleted refresh's daemon sees `stopped` within half a second: wait
    # for that, so its cleanup runs now, not after a cancellation backoff's
    # recheck (which made `kubectl delete` take 10 s).
    settings.background.instant_exit_timeout = 2.0
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60
    operator_settings = OperatorSettings.from_env()
    redis_settings = RedisSettings.from_env()
    redis = redis_settings.client(max_connections=redis_settings.max_connections)
    memo.ctx = Context(
        operator_settings,
        redis_settings,
        redis,
        NetworkSettings.from_env(),
        subscriptions=Subscriptions(redis),
        memory=memory.RedisMemory(redis, operator_settings.redis_high_water),
        scrape_slots=ScrapeSlots(
            operator_settings.concurrent_scrapes, operator_settings.namespace_scrapes
        ),
        pool_turns=PoolTurns(),
    )
    if operator_settings.metrics_port:
        address, port = operator_settings.metrics_address, operator_settings.metrics_port
        try:
            memo.ctx.metrics.serve(address, port)
        except OSError as exc:
            # Retrying cannot free the port: the operator exits saying so (a
            # pod restarts with that in its log) instead of starting nothing.
            raise kopf.PermanentError(
                f"metrics cannot listen on {address}:{port}: {exc.strerror or exc}"
            ) from exc
    settings.execution.max_workers = 20
    if operator_settings.viewer_secret and operator_settings.worker_redis_acl:
        keeper = viewer_access.keep_forever(
            redis, memo.ctx.credential_key, redis_settings.url, operator_settings.viewer_secret
        )
        memo.ctx.background.append(asyncio.create_task(keeper))


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """As the operator's own calls log in (operator/apiclient.py), so kopf
    needs no client library."""
    return apiclient.login(**kwargs)


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    for task in memo.ctx.background:
        task.cancel()
    await memo.ctx.subscriptions.aclose()
    await memo.ctx.redis.aclose()
    await kube.API.close()


@kopf.index(c.GROUP, c.VERSION, c.PLURAL)
def refreshes_by_pool(body: kopf.Body, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
    """Every refresh, by namespace and pool, as much of it as concurrencyPolicy
    reads: waiting refreshes look here instead of listing their namespace
    every step (500 of them kept the operator busy doing only that)."""
    return policy.index_entry(dict(body))


def _ctx(memo: kopf.Memo, body: kopf.Body, index: kopf.Index[Any, Any] | None = None) -> Context:
    ctx: Context = memo.ctx

    def event(reason: str, message: str, warning: bool = False) -> None:
        # kopf.event, not kopf.info: posting.level mutes kopf's own chatter only.
        kopf.event(body, type="Warning" if warning else "Normal", reason=reason, message=message)

    def peers(namespace: str, pool: str | None) -> list[dict[str, Any]]:
        if index is None:
            return []
        if pool is not None:
            return list(index.get((namespace, pool), []))
        return [it for key in list(index) if key[0] == namespace for it in index[key]]

    return dataclasses.replace(ctx, events=event, peers=peers if index is not None else None)


# Stopped once the refresh is finished (kopf sees the Complete we wrote): it
# gets cancellation_backoff seconds to finish its step's after-work (the
# history, the pool's status) before kopf cancels it.
@kopf.daemon(
    c.GROUP, c.VERSION, c.PLURAL, when=active, cancellation_backoff=10, cancellation_timeout=10
)
async def follow(
    body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped, **kwargs: Any
) -> None:
    """While the refresh is not finished: steps, woken by its run's Redis
    events (at most one a second) or every two seconds (operator/driver.py)."""
    index = kwargs["refreshes_by_pool"]  # kopf hands each handler its indexes by name
    await driver.drive(_ctx(memo, body, index), body, stopped)


@kopf.on.delete(c.GROUP, c.VERSION, c.PLURAL)
async def delete(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await reconcile.cleanup(_ctx(memo, body), dict(body))
    memo.ctx.pool_turns.wake(body["metadata"]["namespace"], policy.pool_of(dict(body)))


@kopf.daemon(c.GROUP, c.VERSION, c.POOL_PLURAL, cancellation_backoff=5, cancellation_timeout=10)
async def pool_daemon(
    body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped, **_: Any
) -> None:
    """One per ProxyPool: its status and refills, from the pool's Redis events."""
    ctx = memo.ctx
    watch = pools.PoolWatch(
        ctx.redis,
        ctx.metrics,
        ctx.subscriptions,
        access_key=ctx.credential_key if ctx.settings.worker_redis_acl else None,
        redis_url=ctx.redis_settings.url,
    )
    await watch.run(body, stopped)


@kopf.on.delete(c.GROUP, c.VERSION, c.POOL_PLURAL)
async def pool_deleted(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A deleted ProxyPool takes its pool in Redis along (its refreshes go
    with it through their owner references)."""
    meta = body["metadata"]
    await pools.PoolWatch(memo.ctx.redis).pool(dict(body)).delete()
    spec = pools.pool_spec(dict(body))
    if spec is not None and spec.access is not None:  # its consumer user goes too
        await pool_access.revoke(memo.ctx.redis, meta["namespace"], meta["name"])
    memo.ctx.metrics.pool_gone(meta["namespace"], meta["name"])
    logging.getLogger("proxyrefresh.operator").info(
        "pool %s/%s deleted with its Redis keys", meta["namespace"], meta["name"]
    )
