"""The native checking engine: asyncio, one judge request per proxy.

Dead proxies cost a whole timeout each, so throughput is set by how many
checks are in flight: a fixed pool of ``concurrency`` coroutines pulls
proxies from one iterator (no task per proxy parked on a semaphore), and
each check is bounded by its own connect and total timeouts.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from python_socks import ProxyError

from proxyrefresh import http_status
from proxyrefresh.models import Proxy, ProxyResult, TargetResult, TargetSpec
from proxyrefresh.netguard import NetworkGuard
from proxyrefresh.settings import CheckerSettings
from proxyrefresh.worker import wire
from proxyrefresh.worker.anonymity import classify
from proxyrefresh.worker.wire import TOKEN_PARAM

MAX_BODY = 64 * 1024


class BadJudgeAnswer(ValueError):
    """What came back through the proxy is not our judge's answer."""


class ProxyRefused(ValueError):
    """The proxy itself answered instead of passing the request on (an HTTP
    status of its own, a SOCKS refusal): it is the proxy's fault, not the judge's."""


class NoJudgeAvailable(RuntimeError):
    """No judge answered a direct request, so no proxy can be judged."""


@dataclass(frozen=True)
class Judge:
    url: str
    real_ip: str
    server: str | None = None  # its Server header: tells its answers from a proxy's


@dataclass(frozen=True)
class CheckOptions:
    judges: Sequence[str]
    timeout: float = 10.0
    connect_timeout: float | None = None
    concurrency: int = 256
    targets: Sequence[TargetSpec] = field(default_factory=tuple)
    # In a cluster, judges and targets are a tenant's URLs: the worker checks
    # them like the operator checks sources. Off for `proxyrefresh check`.
    guard: NetworkGuard = field(default_factory=lambda: NetworkGuard(enabled=False))

    @classmethod
    def from_settings(
        cls, settings: CheckerSettings, guard: NetworkGuard | None = None
    ) -> CheckOptions:
        """The checker's options from its settings (the CLI's and a pod's alike)."""
        return cls(
            judges=settings.judges,
            timeout=settings.timeout,
            connect_timeout=settings.connect_timeout,
            concurrency=settings.concurrency,
            targets=settings.targets,
            guard=guard or NetworkGuard(enabled=False),
        )

    async def vet_urls(self) -> None:
        """Raise AddressRefused if a judge or target is somewhere the guard refuses."""
        for url in [*self.judges, *(t.url for t in self.targets)]:
            await self.guard.vet(url)

    @property
    def connect_seconds(self) -> float:
        return min(self.connect_timeout or self.timeout, self.timeout)


def describe(exc: BaseException, timeout: float) -> str:
    """A short, stable reason for a failed check, naming who answered (the
    vocabulary is in the README: timed out, connection failed, proxy refused,
    proxy answered, judge answered, forged answer)."""
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return f"timed out after {timeout:g}s"
    if isinstance(exc, BadJudgeAnswer | ProxyRefused):
        return str(exc)
    if isinstance(exc, ProxyError):  # a SOCKS or CONNECT refusal from the proxy
        return f"proxy refused: {exc}"[:300]
    if isinstance(exc, wire.ClosedEarly):
        return f"proxy refused: {exc}"
    if isinstance(exc, wire.NotHttp):
        return f"forged answer: {exc}"
    if isinstance(exc, OSError) and exc.errno:
        return f"connection failed: {os.strerror(exc.errno)}"
    if isinstance(exc, asyncio.IncompleteReadError):  # only the tunnel handshake reads so
        return "proxy refused: closed the connection during the handshake"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]


def judge_data(answer: wire.Answer, token: str, judge: Judge | None = None) -> dict[str, Any]:
    """Parse a judge answer, refusing one that does not echo our token. A
    status other than 200 through a proxy is the proxy's own answer unless it
    carries the judge's Server header (407 always is: it is a proxy's status)."""
    if answer.status != 200:
        status = http_status.text(answer.status)
        if answer.status == 407:
            raise ProxyRefused(f"proxy refused: authentication required ({status})")
        if judge is not None and answer.headers.get("server") != judge.server:
            raise ProxyRefused(f"proxy answered {status}")
        raise BadJudgeAnswer(f"judge answered {status}")
    try:
        data = json.loads(answer.body)
    except ValueError:
        raise BadJudgeAnswer("forged answer: not a judge's JSON") from None
    if not isinstance(data, dict) or data.get("token") != token:
        raise BadJudgeAnswer("forged answer: judge token not echoed")
    return data


async def discover_judges(
    urls: Iterable[str], request_timeout: float = 10.0, guard: NetworkGuard | None = None
) -> tuple[list[Judge], dict[str, str]]:
    """Ask every judge directly who we are. Returns the working judges and
    an error per judge that did not answer."""
    judges: list[Judge] = []
    errors: dict[str, str] = {}
    guard = guard or NetworkGuard(enabled=False)
    for url in urls:
        token = secrets.token_hex(16)
        try:
            parts = wire.Target.of(url)
            address = None
            if guard.enabled:  # connect to the very address the guard allowed
                address = (await guard.addresses(parts.host, parts.port))[0]
            async with asyncio.timeout(request_timeout):
                answer = await wire.get(
                    None, parts.with_param(TOKEN_PARAM, token), request_timeout, address=address
                )
            data = judge_data(answer, token)
            server = answer.headers.get("server")
            judges.append(Judge(url=url, real_ip=str(data["remote_addr"]), server=server))
        except Exception as exc:
            errors[url] = describe(exc, request_timeout)
    return judges, errors


async def require_judges(
    urls: Sequence[str], request_timeout: float, guard: NetworkGuard | None = None
) -> list[Judge]:
    if not urls:
        raise NoJudgeAvailable("no judge configured: give at least one judge URL")
    judges, errors = await discover_judges(urls, request_timeout, guard)
    if not judges:
        detail = "; ".join(f"{url}: {why}" for url, why in errors.items())
        raise NoJudgeAvailable(f"no judge answered a direct request ({detail})")
    return judges


def identity(proxy: Proxy) -> dict[str, Any]:
    """What every result says of the proxy it is about."""
    return {"proxy": proxy.url, "protocol": proxy.protocol, "host": proxy.host, "port": proxy.port}


class NativeChecker:
    """Checks proxies against judges, one plain request each (worker/wire.py;
    worker/tunnel.py for tunnels)."""

    def __init__(self, options: CheckOptions, judges: Sequence[Judge]) -> None:
        if not judges:
            raise NoJudgeAvailable("NativeChecker needs at least one working judge")
        self.options = options
        self.judges = list(judges)
        self.real_ips = tuple(sorted({j.real_ip for j in judges}))
        self._targets = [wire.Target.of(j.url) for j in self.judges]  # parsed once

    async def check(self, proxy: Proxy, index: int = 0) -> ProxyResult:
        """Check one proxy; never raises for anything the proxy does."""
        judge = self.judges[index % len(self.judges)]
        target = self._targets[index % len(self.judges)]
        options = self.options
        token = secrets.token_hex(16)
        try:
            async with asyncio.timeout(options.timeout):
                answer = await wire.get(
                    proxy,
                    target.with_param(TOKEN_PARAM, token),
                    options.connect_seconds,
                    MAX_BODY,
                    total=options.timeout,
                )
            data = judge_data(answer, token, judge)
            # The kernel's round trip plus request to first byte (stamped in
            # the protocol's callback): what the proxy took, not how long
            # this coroutine waited to be scheduled again.
            latency = answer.latency * 1000
            exit_ip = str(data.get("remote_addr") or "") or None
            raw_headers = data.get("headers") or {}
            headers = {str(k): str(v) for k, v in raw_headers.items()}
            verdict = classify(self.real_ips, exit_ip, headers, proxy.protocol.is_tunnel)
            targets = [await self._target(proxy, t) for t in options.targets]
        except Exception as exc:
            return ProxyResult(
                **identity(proxy),
                judge=judge.url,
                alive=False,
                error=describe(exc, options.timeout),
                checked_at=time.time(),
            )
        return ProxyResult(
            **identity(proxy),
            judge=judge.url,
            alive=True,
            exit_ip=exit_ip,
            latency_ms=round(latency, 1),
            anonymity=verdict.anonymity,
            revealing_headers=verdict.revealing_headers,
            targets=targets,
            checked_at=time.time(),
        )

    async def _target(self, proxy: Proxy, target: TargetSpec) -> TargetResult:
        timeout = self.options.timeout
        try:
            async with asyncio.timeout(timeout):
                answer = await wire.get(proxy, target.url, self.options.connect_seconds, MAX_BODY)
        except Exception as exc:
            return TargetResult(url=target.url, ok=False, error=describe(exc, timeout))
        return TargetResult(
            url=target.url,
            ok=answer.status == target.expect_status,
            status=answer.status,
            latency_ms=round(answer.latency * 1000, 1),
        )

    async def check_stream(
        self, proxies: Iterable[Proxy]
    ) -> AsyncIterator[tuple[int, ProxyResult]]:
        """Check every proxy with at most ``concurrency`` in flight, yielding
        ``(position, result)`` as checks finish (fast failures first)."""
        results: asyncio.Queue[tuple[int, ProxyResult] | None] = asyncio.Queue()
        source = enumerate(proxies)

        async def pump() -> None:
            try:
                for position, proxy in source:
                    await results.put((position, await self.check(proxy, position)))
            finally:
                await results.put(None)

        workers = max(1, self.options.concurrency)
        tasks = [asyncio.create_task(pump()) for _ in range(workers)]
        try:
            finished = 0
            while finished < workers:
                item = await results.get()
                if item is None:
                    finished += 1
                else:
                    yield item
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
