"""The rotator's JSON API: the pool for consumers not written in Python.

    GET  /v1/proxy?protocol=&min_anonymity=&max_latency_ms=   a proxy (404: none matches)
    POST /v1/report  {"proxy": URL, "ok": bool, "latency_ms": N}   an outcome
    GET  /v1/stats   size, usable, by protocol and anonymity
    GET  /healthz    the process serves (and what it has done)
    GET  /readyz     the pool's store answers

The proxy URL it hands out carries the upstream's credentials (a consumer
needs them to use it), so the API wants the rotator's client credentials
when it has any, and the chart keeps it off the Service unless asked.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from proxyrefresh.pool import NoMatch, NotInPool, PoolError
from proxyrefresh.redact import redis_problem
from proxyrefresh.worker.rotate import Rotator, accepts, basic, listener_filter, narrow

ROTATOR: web.AppKey[Rotator] = web.AppKey("rotator", Rotator)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
    """Credentials where the rotator has them; the pool's errors as JSON."""
    rotator = request.app[ROTATOR]
    if request.path.startswith("/v1/") and not accepts(
        rotator.settings, basic(request.headers.get("Authorization", ""))
    ):
        challenge = _error(401, "credentials wanted")
        challenge.headers["WWW-Authenticate"] = 'Basic realm="proxyrefresh"'
        return challenge
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except (NoMatch, NotInPool) as exc:
        return _error(404, str(exc))
    except (PoolError, ValueError) as exc:
        return _error(400, str(exc))
    except RedisError as exc:
        return _error(503, f"the pool is unreachable: {redis_problem(exc)}")


async def proxy(request: web.Request) -> web.Response:
    rotator = request.app[ROTATOR]
    q = request.query
    flt = narrow(
        listener_filter(rotator.settings),
        q.get("protocol"),
        q.get("min_anonymity"),
        q.get("max_latency_ms"),
    )
    entry = await rotator.pool.get(**vars(flt))
    return web.json_response(entry.model_dump(mode="json"))


async def report(request: web.Request) -> web.Response:
    rotator = request.app[ROTATOR]
    try:
        body = await request.json()
    except ValueError:
        return _error(400, "the body must be JSON")
    if not isinstance(body, dict) or not isinstance(body.get("proxy"), str):
        return _error(400, 'the body must be {"proxy": URL, "ok": true|false, "latency_ms": N}')
    ok = body.get("ok")
    latency = body.get("latency_ms")
    if not isinstance(ok, bool):
        return _error(400, '"ok" must be true or false')
    if latency is not None and (isinstance(latency, bool) or not isinstance(latency, int | float)):
        return _error(400, '"latency_ms" must be a number')
    outcome = await rotator.pool.report(body["proxy"], ok, latency)
    return web.json_response(dataclasses.asdict(outcome))


async def stats(request: web.Request) -> web.Response:
    result = await request.app[ROTATOR].pool.stats()
    return web.json_response(result.as_dict())


async def healthz(request: web.Request) -> web.Response:
    rotator = request.app[ROTATOR]
    counters = dataclasses.asdict(rotator.counters)
    counters["sessions"] = len(rotator.sessions)
    return web.json_response({"status": "ok", **counters})


async def readyz(request: web.Request) -> web.Response:
    try:
        await request.app[ROTATOR].pool.redis.ping()
    except RedisError as exc:
        return _error(503, f"the pool is unreachable: {redis_problem(exc)}")
    return web.json_response({"status": "ready"})


def make_app(rotator: Rotator) -> web.Application:
    app = web.Application(middlewares=[guard])
    app[ROTATOR] = rotator
    app.router.add_get("/v1/proxy", proxy)
    app.router.add_post("/v1/report", report)
    app.router.add_get("/v1/stats", stats)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app
