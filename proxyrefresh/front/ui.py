"""``proxyrefresh ui``: one live page of the refreshes and pools of some namespaces.

The page (``ui.html``, no build step, nothing fetched from elsewhere: it
works offline) comes with the state as this process last listed it, so
its first paint shows the board, then opens one Server-Sent Events
stream. This process relays the Redis events channels to it as they are
published, the runs' counters (the pods publish every change) and the
pools' sizes, so a bar moves within moments of the change in Redis; the
resources themselves (names, phases, messages) are listed from the API
server every couple of seconds and sent when they change. A refresh's
chunks (from Redis) and pods (from the API server) are read when its card
is opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from importlib import resources
from typing import Any, NoReturn

from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import RedisError

from proxyrefresh import redact
from proxyrefresh.api import STALLED, finished, true_condition
from proxyrefresh.constants import RUNS
from proxyrefresh.front.watch import stalled
from proxyrefresh.pool import BANDS, AsyncPool
from proxyrefresh.pool_keys import PoolKeys
from proxyrefresh.redis_topology import publish_verb

log = logging.getLogger("proxyrefresh.front.ui")
RELIST_SECONDS = 2.0
QUEUE = 256  # events a slow page may fall behind by before it is let go

Lister = Callable[[str], tuple[list[dict[str, Any]], list[dict[str, Any]]]]
# The pods of one refresh: (namespace, refresh name) -> pod objects.
PodLister = Callable[[str, str], list[dict[str, Any]]]


def trouble(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """Condition ``kind``'s reason and message, if it is True."""
    cond = true_condition(status, kind)
    return {"reason": cond.get("reason"), "message": cond.get("message")} if cond else None


def refresh_row(item: dict[str, Any]) -> dict[str, Any]:
    """What the page shows of a ProxyRefresh (never its spec: sources may
    carry credentials)."""
    meta, status = item.get("metadata") or {}, item.get("status") or {}
    keep = (
        "phase", "message", "candidates", "chunkSize", "totalChunks", "completedChunks",
        "failedChunks", "checked", "live", "usable", "startedAt", "completedAt",
    )  # fmt: skip
    return {
        "uid": meta.get("uid"),
        "namespace": meta.get("namespace"),
        "name": meta.get("name"),
        "pool": (item.get("spec") or {}).get("pool", "default"),
        "created": meta.get("creationTimestamp"),
        **{k: status.get(k) for k in keep},
        "message": stalled(status) or status.get("message"),
        "stalled": trouble(status, STALLED),
        "failed": trouble(status, "Failed"),
    }


def pool_row(item: dict[str, Any]) -> dict[str, Any]:
    meta, status = item.get("metadata") or {}, item.get("status") or {}
    return {
        "namespace": meta.get("namespace"),
        "name": meta.get("name"),
        "size": status.get("size"),
        "usable": status.get("usable"),
        "anonymity": status.get("anonymity") or {},
        "protocols": status.get("protocols") or {},
        "minUsable": (item.get("spec") or {}).get("minUsable"),
        "belowMinimum": trouble(status, "BelowMinimum"),
        "stalled": trouble(status, STALLED),
    }


def pod_row(pod: dict[str, Any]) -> dict[str, Any]:
    """What the page shows of a worker pod: its chunk, phase and trouble."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    annotations = meta.get("annotations") or {}
    containers = status.get("containerStatuses") or [{}]
    state = containers[0].get("state") or {}
    waiting = (state.get("waiting") or state.get("terminated") or {}).get("reason")
    return {
        "name": meta.get("name"),
        "index": annotations.get("batch.kubernetes.io/job-completion-index"),
        "phase": status.get("phase"),
        "reason": status.get("reason") or waiting,
        "restarts": containers[0].get("restartCount", 0),
        "node": (pod.get("spec") or {}).get("nodeName"),
        "started": status.get("startTime"),
    }


def chunk_rows(
    total: int, completed: set[int], progress: dict[str, str], ended: bool
) -> list[dict[str, Any]]:
    """Each chunk's state from the run's counters in Redis: done, running
    (a pod reported on it), failed (the run ended without it) or waiting."""
    rows = []
    for index in range(total):
        processed = int(progress.get(f"{index}:processed") or 0)
        if index in completed:
            state = "done"
        elif ended:
            state = "failed"
        else:
            state = "running" if f"{index}:processed" in progress else "waiting"
        succeeded = int(progress.get(f"{index}:succeeded") or 0)
        rows.append({"index": index, "state": state, "checked": processed, "live": succeeded})
    return rows


def kube_lister() -> tuple[Lister, PodLister]:
    """List refreshes and pools, and one refresh's pods, through the API
    server (blocking: run in a thread)."""
    from kubernetes import client

    from proxyrefresh import constants as c
    from proxyrefresh.kubeconfig import load

    load()
    api = client.CustomObjectsApi()
    core = client.CoreV1Api()

    def listing(namespace: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        refreshes = api.list_namespaced_custom_object(c.GROUP, c.VERSION, namespace, c.PLURAL)
        pools = api.list_namespaced_custom_object(c.GROUP, c.VERSION, namespace, c.POOL_PLURAL)
        return list(refreshes["items"]), list(pools["items"])

    def pods(namespace: str, refresh: str) -> list[dict[str, Any]]:
        found = core.list_namespaced_pod(namespace, label_selector=f"{c.LABEL_REFRESH}={refresh}")
        return [core.api_client.sanitize_for_serialization(p) for p in found.items]

    return listing, pods


def sse(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class Board:
    """What the pages are shown, and the streams they are fed by."""

    def __init__(
        self,
        redis: Redis,
        namespaces: list[str],
        lister: Lister,
        pods: PodLister | None = None,
    ) -> None:
        self.redis, self.namespaces, self.lister, self.pods = redis, namespaces, lister, pods
        self.refreshes: dict[str, dict[str, Any]] = {}  # by uid
        self.pools: dict[str, dict[str, Any]] = {}  # by namespace/name
        self.clients: set[asyncio.Queue[bytes]] = set()
        self.error: str | None = None
        self.listed = asyncio.Event()  # set once the first listing is in

    async def detail(self, uid: str) -> dict[str, Any] | None:
        """One refresh's chunks and pods; None if it is not on this board."""
        row = self.refreshes.get(uid)
        if row is None:
            return None
        keys = RUNS.keys(uid)
        chunks: list[dict[str, Any]] = []
        error = None
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.smembers(keys.completed)
            pipe.hgetall(keys.index_progress)
            completed, progress = await pipe.execute()
            ended = finished(row.get("phase"))
            total = int(row.get("totalChunks") or 0)
            chunks = chunk_rows(total, {int(i) for i in completed}, progress, ended)
        except RedisError as exc:
            error = f"Redis: {redact.redis_problem(exc)}"
        pods: list[dict[str, Any]] = []
        if self.pods is not None:
            try:
                found = await asyncio.to_thread(self.pods, row["namespace"], row["name"])
                pods = sorted(map(pod_row, found), key=lambda p: int(p["index"] or 0))
            except Exception as exc:  # the API server's errors are shown, not fatal
                error = f"the API server: {redact.one_line(str(exc), 200)}"
        return {"uid": uid, "chunks": chunks, "pods": pods, "error": error}

    def state(self) -> dict[str, Any]:
        return {
            "refreshes": sorted(self.refreshes.values(), key=lambda r: r.get("created") or ""),
            "pools": [self.pools[k] for k in sorted(self.pools)],
            "error": self.error,
        }

    def send(self, message: bytes) -> None:
        for queue in list(self.clients):
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:
                self.clients.discard(queue)  # its stream ends; the page reconnects

    async def relist(self) -> None:
        refreshes: dict[str, dict[str, Any]] = {}
        pools: dict[str, dict[str, Any]] = {}
        try:
            for ns in self.namespaces:
                found, found_pools = await asyncio.to_thread(self.lister, ns)
                refreshes.update({r["uid"]: r for r in map(refresh_row, found)})
                for p in map(pool_row, found_pools):
                    pools[f"{p['namespace']}/{p['name']}"] = p
            error = None
        except Exception as exc:  # the API server's errors are shown, not fatal
            error = f"the API server: {exc}"
            refreshes, pools = self.refreshes, self.pools
        for row in refreshes.values():  # a pool may have no ProxyPool: its refreshes name it
            key = f"{row['namespace']}/{row['pool']}"
            pools.setdefault(key, {"namespace": row["namespace"], "name": row["pool"]})
        for pool in pools.values():
            await self.pool_stats(pool)
        for uid, row in refreshes.items():
            old = self.refreshes.get(uid, {})
            for field in ("checked", "live", "completedChunks"):
                if (old.get(field) or 0) > (row.get(field) or 0):
                    row[field] = old[field]  # the events were ahead: never backwards
        changed = (refreshes, pools, error) != (self.refreshes, self.pools, self.error)
        self.refreshes, self.pools, self.error = refreshes, pools, error
        self.listed.set()
        if changed:
            self.send(sse("state", self.state()))

    async def latency(self, namespace: str, name: str) -> list[int]:
        """How many of the pool's proxies fall in each latency band."""
        key = PoolKeys(namespace, name).latency
        try:
            pipe = self.redis.pipeline(transaction=False)
            lower = 0.0
            for upper in BANDS:
                pipe.zcount(key, lower, f"({upper}" if upper != float("inf") else "+inf")
                lower = upper
            return [int(n) for n in await pipe.execute()]
        except RedisError:
            return []

    async def run_event(self, channel: str, data: dict[str, Any]) -> None:
        uid = channel.split("{", 1)[1].split("}", 1)[0]
        row = self.refreshes.get(uid)
        if row is None:
            return  # not one of our namespaces (or not listed yet)
        row["totalChunks"] = data.get("total_chunks", row.get("totalChunks"))
        for field, source in (
            ("completedChunks", "completed_chunks"),
            ("checked", "processed"),
            ("live", "succeeded"),
        ):
            row[field] = max(row.get(field) or 0, int(data.get(source) or 0))
        self.send(
            sse("run", {**{k: row.get(k) for k in ("uid", "totalChunks", "completedChunks",
                                                   "checked", "live")},
                        "updatedAt": data.get("updated_at"), "relayedAt": time.time()})
        )  # fmt: skip

    async def pool_event(self, channel: str, data: dict[str, Any]) -> None:
        tag = channel.split("{", 1)[1].split("}", 1)[0]
        pool = self.pools.get(tag)
        if pool is None:
            return
        await self.pool_stats(pool)
        self.send(sse("pool", pool))

    async def pool_stats(self, pool: dict[str, Any]) -> None:
        """The pool as Redis has it now (its status may lag behind)."""
        try:
            stats = await AsyncPool(self.redis, pool["name"], pool["namespace"]).stats()
        except RedisError:
            return
        pool.update(stats.as_dict())
        pool["latency"] = await self.latency(pool["namespace"], pool["name"])

    async def listen(self) -> None:
        """Relay the runs' and pools' events channels, reconnecting if Redis goes away."""
        while True:
            pubsub = self.redis.pubsub()
            try:
                if publish_verb(self.redis) == "SPUBLISH":
                    await self.listen_sharded(pubsub)
                await pubsub.psubscribe(
                    f"{RUNS.key_prefix}:{{*}}:events", f"{RUNS.key_prefix}:pool:{{*}}:events"
                )
                async for message in pubsub.listen():
                    if message.get("type") == "pmessage":
                        await self.relay(str(message["channel"]), message["data"])
            except RedisError as exc:
                self.error = f"Redis: {exc}"
                self.send(sse("state", self.state()))
                await asyncio.sleep(RELIST_SECONDS)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]

    async def listen_sharded(self, pubsub: Any) -> NoReturn:
        """A cluster's events, on sharded channels (publish_verb), which take
        no pattern: the channels of the refreshes and pools listed, brought in
        line with the listing between reads."""
        while True:
            wanted = {RUNS.keys(uid).events for uid, row in self.refreshes.items()
                      if not finished(row.get("phase"))}  # fmt: skip
            wanted |= {PoolKeys(p["namespace"], p["name"]).events for p in self.pools.values()}
            subscribed = set(pubsub.shard_channels)
            if wanted - subscribed:
                await pubsub.ssubscribe(*(wanted - subscribed))
            if subscribed - wanted:
                await pubsub.sunsubscribe(*(subscribed - wanted))
            if not wanted:
                await asyncio.sleep(1.0)
                continue
            message = await pubsub.get_sharded_message(ignore_subscribe_messages=True, timeout=1.0)
            if message and message.get("type") == "smessage":
                await self.relay(str(message["channel"]), message["data"])

    async def relay(self, channel: str, raw: Any) -> None:
        """One event to the pages: a run's progress or a pool's size."""
        try:
            data = json.loads(raw)
        except (TypeError, ValueError):
            return
        if channel.startswith(f"{RUNS.key_prefix}:pool:"):
            await self.pool_event(channel, data)
        else:
            await self.run_event(channel, data)

    async def relisting(self) -> None:
        while True:
            await self.relist()
            await asyncio.sleep(RELIST_SECONDS)


BOARD: web.AppKey[Board] = web.AppKey("board", Board)


FIRST_LISTING_WAIT = 5.0  # how long the page waits for a board not listed yet
INITIAL = '<script id="initial" type="application/json">null</script>'


async def page(request: web.Request) -> web.Response:
    """The page with the board's state in it: its first paint shows the
    refreshes and pools, not "connecting…" over "none yet"."""
    board = request.app[BOARD]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(board.listed.wait(), FIRST_LISTING_WAIT)
    html = resources.files("proxyrefresh.front").joinpath("ui.html").read_text()
    state = json.dumps(board.state(), separators=(",", ":")).replace("</", "<\\/")
    html = html.replace(INITIAL, INITIAL.replace(">null<", f">{state}<"))
    return web.Response(text=html, content_type="text/html")


async def refresh_detail(request: web.Request) -> web.Response:
    found = await request.app[BOARD].detail(request.match_info["uid"])
    if found is None:
        return web.json_response({"error": "no such refresh on this page"}, status=404)
    return web.json_response(found)


async def state(request: web.Request) -> web.Response:
    return web.json_response(request.app[BOARD].state())


async def events(request: web.Request) -> web.StreamResponse:
    board = request.app[BOARD]
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
    )
    await response.prepare(request)
    queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUE)
    board.clients.add(queue)
    try:
        await response.write(sse("state", board.state()))
        while queue in board.clients:
            try:
                message = await asyncio.wait_for(queue.get(), timeout=15)
            except TimeoutError:
                message = b": keep-alive\n\n"  # proxies close idle streams
            await response.write(message)
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        board.clients.discard(queue)
    return response


async def healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok")


async def readyz(request: web.Request) -> web.Response:
    """Ready while Redis answers this process's user: a page whose viewer
    user is gone (a Redis restarted without its ACLs) shows only errors, so
    its pod leaves the Service instead of serving them."""
    try:
        await request.app[BOARD].redis.ping()
    except RedisError as exc:
        return web.Response(status=503, text=f"Redis: {redact.redis_problem(exc)}")
    return web.Response(text="ready")


def make_app(board: Board) -> web.Application:
    app = web.Application()
    app[BOARD] = board
    app.router.add_get("/", page)
    app.router.add_get("/state", state)
    app.router.add_get("/events", events)
    app.router.add_get("/refreshes/{uid}", refresh_detail)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)

    async def end_streams(_: web.Application) -> None:
        """Let every page's stream end now, not at its next keep-alive."""
        for queue in list(board.clients):
            board.clients.discard(queue)
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(b"")

    app.on_shutdown.append(end_streams)

    async def background(app: web.Application) -> Any:
        tasks = [asyncio.create_task(board.relisting()), asyncio.create_task(board.listen())]
        yield
        for task in tasks:
            task.cancel()

    app.cleanup_ctx.append(background)
    return app
