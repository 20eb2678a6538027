"""``proxyrefresh ui``: one live page of the refreshes and pools of some namespaces.

The page (``ui.html``, no build step, nothing fetched from elsewhere: it
works offline) opens one Server-Sent Events stream. This process relays
the Redis events channels to it as they are published, the runs' counters
(the pods publish every change) and the pools' sizes, so a bar moves
within moments of the change in Redis; the resources themselves (names,
phases, messages) are listed from the API server every couple of seconds
and sent when they change.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from importlib import resources
from typing import Any

from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import RedisError

from proxyrefresh.fanout.store import KEY_PREFIX, PoolKeys
from proxyrefresh.pool import BANDS, AsyncPool
from proxyrefresh.watch import stalled

log = logging.getLogger("proxyrefresh.ui")
RELIST_SECONDS = 2.0
QUEUE = 256  # events a slow page may fall behind by before it is let go

Lister = Callable[[str], tuple[list[dict[str, Any]], list[dict[str, Any]]]]


def refresh_row(item: dict[str, Any]) -> dict[str, Any]:
    """What the page shows of a ProxyRefresh (never its spec: sources may
    carry credentials)."""
    meta, status = item.get("metadata") or {}, item.get("status") or {}
    keep = (
        "phase", "message", "candidates", "totalChunks", "completedChunks",
        "checked", "live", "usable", "startedAt", "completedAt",
    )  # fmt: skip
    return {
        "uid": meta.get("uid"),
        "namespace": meta.get("namespace"),
        "name": meta.get("name"),
        "pool": (item.get("spec") or {}).get("pool", "default"),
        "created": meta.get("creationTimestamp"),
        **{k: status.get(k) for k in keep},
        "message": stalled(status) or status.get("message"),
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
    }


def kube_lister() -> Lister:
    """List refreshes and pools through the API server (blocking: run in a thread)."""
    from kubernetes import client

    from proxyrefresh import constants as c
    from proxyrefresh.kubeconfig import load

    load()
    api = client.CustomObjectsApi()

    def listing(namespace: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        refreshes = api.list_namespaced_custom_object(c.GROUP, c.VERSION, namespace, c.PLURAL)
        pools = api.list_namespaced_custom_object(c.GROUP, c.VERSION, namespace, c.POOL_PLURAL)
        return list(refreshes["items"]), list(pools["items"])

    return listing


def sse(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class Board:
    """What the pages are shown, and the streams they are fed by."""

    def __init__(self, redis: Redis, namespaces: list[str], lister: Lister) -> None:
        self.redis, self.namespaces, self.lister = redis, namespaces, lister
        self.refreshes: dict[str, dict[str, Any]] = {}  # by uid
        self.pools: dict[str, dict[str, Any]] = {}  # by namespace/name
        self.clients: set[asyncio.Queue[bytes]] = set()
        self.error: str | None = None

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
                await pubsub.psubscribe(
                    f"{KEY_PREFIX}:{{*}}:events", f"{KEY_PREFIX}:pool:{{*}}:events"
                )
                async for message in pubsub.listen():
                    if message.get("type") != "pmessage":
                        continue
                    channel = str(message["channel"])
                    try:
                        data = json.loads(message["data"])
                    except (TypeError, ValueError):
                        continue
                    if channel.startswith(f"{KEY_PREFIX}:pool:"):
                        await self.pool_event(channel, data)
                    else:
                        await self.run_event(channel, data)
            except RedisError as exc:
                self.error = f"Redis: {exc}"
                self.send(sse("state", self.state()))
                await asyncio.sleep(RELIST_SECONDS)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]

    async def relisting(self) -> None:
        while True:
            await self.relist()
            await asyncio.sleep(RELIST_SECONDS)


BOARD: web.AppKey[Board] = web.AppKey("board", Board)


async def page(_: web.Request) -> web.Response:
    html = resources.files("proxyrefresh").joinpath("ui.html").read_text()
    return web.Response(text=html, content_type="text/html")


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


def make_app(board: Board) -> web.Application:
    app = web.Application()
    app[BOARD] = board
    app.router.add_get("/", page)
    app.router.add_get("/state", state)
    app.router.add_get("/events", events)
    app.router.add_get("/healthz", healthz)

    async def background(app: web.Application) -> Any:
        tasks = [asyncio.create_task(board.relisting()), asyncio.create_task(board.listen())]
        yield
        for task in tasks:
            task.cancel()

    app.cleanup_ctx.append(background)
    return app
