"""The rotator's JSON API: the pool for consumers not written in Python.

    GET  /v1/proxy?protocol=&min_anonymity=&max_latency_ms=   a proxy and its lease (404: none)
    POST /v1/report  {"proxy": URL, "lease": L, "ok": bool, "latency_ms": N}   an outcome
    GET  /v1/stats   size, usable, by protocol and anonymity
    GET  /healthz    the process serves (and what it has done)
    GET  /readyz     the pool's store answers

The proxy URL it hands out carries the upstream's credentials (a consumer
needs them to use it), so the API wants the rotator's client credentials
when it has any, and the chart keeps it off the Service unless asked.

A pool is shared: one consumer's reports must not empty it for the others
(a proxy is dropped after its third failure in a row). So a report must
carry the lease its proxy was handed out with, once; and a failure counts
at most once per client and proxy in LEASE_SECONDS, and at most
``report_failures_per_minute`` times a minute per client. One consumer
alone can so never drop a proxy, and its reports cost another's proxies
nothing it was not handed (docs/security.md).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from redis.exceptions import RedisError

from proxyrefresh.pool import NoMatch, NotInPool, PoolError
from proxyrefresh.redact import redis_problem
from proxyrefresh.worker.rotate import (
    Rotator,
    accepts,
    basic,
    listener_filter,
    narrow,
    user_params,
)

LEASE_SECONDS = 600.0  # how long a handed-out proxy may be reported on
MAX_REMEMBERED = 100_000  # leases used and failures counted, kept to refuse repeats


class Rejected(Exception):
    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status, self.retry_after = status, retry_after


def _remember(seen: OrderedDict[Any, float], key: Any, until: float, now: float) -> None:
    seen[key] = until
    seen.move_to_end(key)
    while seen and (len(seen) > MAX_REMEMBERED or next(iter(seen.values())) < now):
        seen.popitem(last=False)


@dataclass
class Reports:
    """Which reports count: only on a proxy handed out (its lease, once),
    a failure once per client and proxy, a client's failures rate-limited.
    Local to this process (the Service keeps a client on one replica)."""

    per_minute: int
    key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    clock: Any = time.time
    _used: OrderedDict[str, float] = field(default_factory=OrderedDict)
    _blamed: OrderedDict[tuple[str, str], float] = field(default_factory=OrderedDict)
    _bucket: dict[str, tuple[float, float]] = field(default_factory=dict)

    def _sign(self, proxy: str, until: int, nonce: str) -> str:
        message = f"{proxy}|{until}|{nonce}".encode()
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()[:32]

    def lease(self, proxy: str) -> str:
        until, nonce = int(self.clock() + LEASE_SECONDS), secrets.token_hex(8)
        return f"{until}.{nonce}.{self._sign(proxy, until, nonce)}"

    def admit(self, client: str, proxy: str, lease: object, ok: bool) -> None:
        """Raise Rejected unless this report may count."""
        now = self.clock()
        if not isinstance(lease, str) or lease.count(".") != 2:
            raise Rejected(400, '"lease" is wanted: the one GET /v1/proxy gave with this proxy')
        until_text, nonce, mac = lease.split(".")
        if not (until_text.isascii() and until_text.isdecimal()) or not hmac.compare_digest(
            mac, self._sign(proxy, int(until_text), nonce)
        ):
            raise Rejected(403, "this lease was not given out with this proxy")
        if int(until_text) < now:
            raise Rejected(403, "this lease has expired: get a proxy again")
        if lease in self._used:
            raise Rejected(409, "this lease was reported on already")
        if not ok:
            if self._blamed.get((client, proxy), 0.0) > now:
                raise Rejected(429, "you reported this proxy failing already: once counts")
            tokens, last = self._bucket.get(client, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - last) * self.per_minute / 60)
            if tokens < 1:
                wait = int((1 - tokens) * 60 / self.per_minute) + 1
                self._bucket[client] = (tokens, now)
                raise Rejected(429, f"more than {self.per_minute} failures a minute", wait)
            self._bucket[client] = (tokens - 1, now)
            _remember(self._blamed, (client, proxy), now + LEASE_SECONDS, now)
        _remember(self._used, lease, int(until_text), now)


ROTATOR: web.AppKey[Rotator] = web.AppKey("rotator", Rotator)
REPORTS: web.AppKey[Reports] = web.AppKey("reports", Reports)
METRICS: web.AppKey[CollectorRegistry] = web.AppKey("metrics", CollectorRegistry)


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
    lease = request.app[REPORTS].lease(entry.proxy)
    return web.json_response({**entry.model_dump(mode="json"), "lease": lease})


def client_of(request: web.Request) -> str:
    """Who reports: the user name given (less its parameters) and the address."""
    given = basic(request.headers.get("Authorization", ""))
    return f"{user_params(given[0])[0] if given else ''}@{request.remote or ''}"


async def report(request: web.Request) -> web.Response:
    rotator = request.app[ROTATOR]
    try:
        body = await request.json()
    except ValueError:
        return _error(400, "the body must be JSON")
    if not isinstance(body, dict) or not isinstance(body.get("proxy"), str):
        return _error(
            400, 'the body must be {"proxy": URL, "lease": L, "ok": true|false, "latency_ms": N}'
        )
    ok = body.get("ok")
    latency = body.get("latency_ms")
    if not isinstance(ok, bool):
        return _error(400, '"ok" must be true or false')
    if latency is not None and (isinstance(latency, bool) or not isinstance(latency, int | float)):
        return _error(400, '"latency_ms" must be a number')
    try:
        request.app[REPORTS].admit(client_of(request), body["proxy"], body.get("lease"), ok)
    except Rejected as exc:
        refused = _error(exc.status, str(exc))
        if exc.retry_after is not None:
            refused.headers["Retry-After"] = str(exc.retry_after)
        return refused
    outcome = await rotator.pool.report(body["proxy"], ok, latency)
    return web.json_response(dataclasses.asdict(outcome))


async def stats(request: web.Request) -> web.Response:
    result = await request.app[ROTATOR].pool.stats()
    return web.json_response(result.as_dict())


async def healthz(request: web.Request) -> web.Response:
    totals = request.app[ROTATOR].totals()
    totals["by_status"] = {str(code): n for code, n in totals["by_status"].items()}
    return web.json_response({"status": "ok", **totals})


async def readyz(request: web.Request) -> web.Response:
    try:
        await request.app[ROTATOR].pool.redis.ping()
    except RedisError as exc:
        return _error(503, f"the pool is unreachable: {redis_problem(exc)}")
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    body = generate_latest(request.app[METRICS])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def make_app(rotator: Rotator) -> web.Application:
    from proxyrefresh.worker.rotate_metrics import registry_for

    app = web.Application(middlewares=[guard])
    app[METRICS] = registry_for(rotator)
    app[ROTATOR] = rotator
    app[REPORTS] = Reports(rotator.settings.report_failures_per_minute)
    app.router.add_get("/v1/proxy", proxy)
    app.router.add_post("/v1/report", report)
    app.router.add_get("/v1/stats", stats)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
