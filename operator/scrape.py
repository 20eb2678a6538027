"""Gather candidates from a refresh's sources, concurrently.

URL sources are fetched with aiohttp on kopf's loop, under the network
guard (proxyrefresh.netguard): every hop of a fetch, redirects included
(at most five), is resolved and checked before anything is sent, and the
connection goes to the address that was checked. Retries back off
exponentially and honour Retry-After on 429/5xx; a size cap bounds the
body; a Secret's headers go only where its owner allowed
(operator.credentials). ConfigMap and inline sources are read as they are.

A body is parsed as it arrives and its candidates go a piece at a time to
the refresh's sink (operator/list_reader.py): the operator holds neither
whole lists nor every candidate.

Nothing read from a source reaches the status: a bad line is reported by
its number, an HTTP error by its code. Each source gets its own outcome in
the status; one bad source does not sink the others.

What one refresh may make the operator hold is bounded whatever its
sources: a few sources are read at a time, each under its own cap, all of
them under a total in bytes, and their candidates under a count. Past a
total the whole refresh fails (LimitExceeded, naming the setting): the
operator and every other tenant's refresh carry on.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import time
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urljoin, urlsplit

import aiohttp

from proxyrefresh import constants as c
from proxyrefresh import http_status, redact
from proxyrefresh.api import Source, SourceStatus
from proxyrefresh.netguard import AddressRefused, NetworkGuard
from proxyrefresh.operator import kube
from proxyrefresh.operator.credentials import SourceCredentials
from proxyrefresh.operator.list_reader import Gathered, ListReader, Sink
from proxyrefresh.parse import InputTooLarge, ParseReport

USER_AGENT = "proxyrefresh-operator"
MAX_REDIRECTS = 5
REDIRECTS = frozenset({301, 302, 303, 307, 308})
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 30.0


class Attempts:
    """Which sources are still being fetched, and which try each is on, so a
    hanging source shows in the status by name and attempt."""

    def __init__(self) -> None:
        self.pending: dict[str, tuple[int, int, float]] = {}

    def started(self, label: str, attempt: int, attempts: int) -> None:
        self.pending[label] = (attempt, attempts, time.monotonic())

    def finished(self, label: str) -> None:
        self.pending.pop(label, None)

    def text(self) -> str:
        now = time.monotonic()
        return "; ".join(
            f"fetching {label}: attempt {attempt} of {attempts}, {now - since:.0f}s"
            for label, (attempt, attempts, since) in self.pending.items()
        )


class SourceError(RuntimeError):
    """A source could not be read; the message names the cause."""


class SourceRefused(SourceError):
    """The guard refused an address: no retry will change that."""


class LimitExceeded(Exception):
    """The refresh as a whole is past a limit of the operator's: it fails."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Budget:
    """The bytes all of one refresh's sources may hold together."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> None:
        self.used += size
        if self.used > self.limit:
            raise LimitExceeded(
                "SourcesTooLarge",
                f"the sources hold more than {self.limit} bytes in all, the operator's limit "
                "per refresh (PROXYREFRESH_OPERATOR_SCRAPE_MAX_BYTES, chart value "
                "operator.limits.scrapeMaxBytes)",
            )

    def give_back(self, size: int) -> None:
        self.used -= size


@dataclass
class ScrapeResult:
    candidates: int = 0  # unique, in the sink the scrape filled
    sources: list[SourceStatus] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return not self.candidates

    def failure_message(self) -> str:
        return "; ".join(f"{s.source}: {s.message}" for s in self.sources if s.message) or (
            "the sources held no candidate proxies"
        )


@dataclass(frozen=True)
class FetchRules:
    """How every URL source is fetched (from OperatorSettings)."""

    guard: NetworkGuard
    timeout: float = 30.0
    retries: int = 3
    max_bytes: int = 32 * 1024 * 1024  # one source
    backoff: float = 0.5
    total_bytes: int = 32 * 1024 * 1024  # all of a refresh's sources together
    max_candidates: int = 1_000_000
    concurrency: int = 4  # sources read at once
    # Candidates Redis has room for (operator/memory.py), and why not more:
    # a scrape past it stops there instead of parsing what cannot be written.
    redis_room: int | None = None
    redis_full: str = ""

    def check(self, count: int) -> None:
        """Raise LimitExceeded once ``count`` candidates are past a limit."""
        if count > self.max_candidates:
            raise self.too_many(count)
        if self.redis_room is not None and count > self.redis_room:
            raise LimitExceeded("RedisFull", f"{self.redis_full}; {count} found so far")

    def too_many(self, count: int) -> LimitExceeded:
        return LimitExceeded(
            "TooManyCandidates",
            f"the sources hold more than {self.max_candidates} candidates, the operator's "
            "limit per refresh (PROXYREFRESH_OPERATOR_MAX_CANDIDATES, chart value "
            f"operator.limits.maxCandidates); {count} found so far",
        )


def retry_after(value: str | None, fallback: float) -> float:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date)."""
    if not value:
        return fallback
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return fallback
        seconds = when.timestamp() - time.time()
    return max(0.0, min(MAX_RETRY_AFTER, seconds))


class Body(Protocol):
    """What a download's body is handed to as it arrives (a ListReader)."""

    def restart(self) -> None: ...
    async def feed(self, data: bytes) -> None: ...
    async def end(self) -> None: ...


async def _get_once(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    rules: FetchRules,
    budget: Budget,
    body: Body,
) -> tuple[int, str | None]:
    """One request, no redirects followed: (status, Location or Retry-After);
    a 200's body goes to ``body`` as it arrives. Its bytes count against the
    refresh's budget; an attempt that fails gives them back (its retry
    counts them again)."""
    rules.guard.check_url(url)
    size = 0
    try:
        async with session.get(url, headers=headers, allow_redirects=False) as resp:
            if resp.status in REDIRECTS:
                return resp.status, resp.headers.get("Location")
            if resp.status != 200:
                return resp.status, resp.headers.get("Retry-After")
            body.restart()
            async for piece in resp.content.iter_chunked(64 * 1024):
                size += len(piece)
                budget.take(len(piece))
                if size > rules.max_bytes:
                    raise SourceError(f"larger than the cap of {rules.max_bytes} bytes")
                await body.feed(piece)
            await body.end()
            return 200, None
    except BaseException:
        budget.give_back(size)
        raise


def _unreachable(exc: BaseException, timeout: float) -> SourceError:
    refused = getattr(exc, "os_error", None) if not isinstance(exc, AddressRefused) else exc
    if isinstance(refused, AddressRefused):
        return SourceRefused(f"refused: {refused}")
    if isinstance(exc, TimeoutError):
        return SourceError(f"unreachable: no answer within {timeout:g}s")
    if isinstance(exc, aiohttp.InvalidURL):
        return SourceError("unreachable: not a valid URL")
    cause = getattr(exc, "os_error", None) or exc
    errno = getattr(cause, "errno", None)
    detail = os.strerror(errno) if errno else type(cause).__name__
    return SourceError(f"unreachable: {detail}")


async def fetch(
    url: str,
    rules: FetchRules,
    body: Body,
    credentials: SourceCredentials | None = None,
    attempts_seen: Attempts | None = None,
    budget: Budget | None = None,
) -> None:
    """GET a list through at most five redirects, every hop under the guard,
    its body into ``body`` as it arrives."""
    budget = budget or Budget(rules.total_bytes)
    attempts = rules.retries + 1
    label = f"url {redact.url(url)}"  # as Source.label names it
    timeout = aiohttp.ClientTimeout(total=rules.timeout, sock_connect=min(10, rules.timeout))
    connector = aiohttp.TCPConnector(limit=4, **rules.guard.connector_kwargs())
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers={"User-Agent": USER_AGENT}, trust_env=False
    ) as session:
        hop = url
        for _ in range(MAX_REDIRECTS + 1):
            headers = credentials.headers_for(hop, url) if credentials else {}
            for attempt in range(1, attempts + 1):
                if attempts_seen is not None:
                    attempts_seen.started(label, attempt, attempts)
                wait = rules.backoff * 2 ** (attempt - 1)
                try:
                    status, extra = await _get_once(session, hop, headers, rules, budget, body)
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    error = _unreachable(exc, rules.timeout)
                    if isinstance(error, SourceRefused) or attempt == attempts:
                        raise error from None
                    await asyncio.sleep(wait)
                    continue
                if status == 200:
                    return
                if status in REDIRECTS:
                    if not extra:
                        raise SourceError(f"{http_status.text(status)} without a Location")
                    hop = urljoin(hop, extra)
                    if urlsplit(hop).scheme not in ("http", "https"):
                        raise SourceError("redirected to a URL that is not http(s)")
                    break
                if status in RETRY_STATUS and attempt < attempts:
                    await asyncio.sleep(retry_after(extra, wait))
                    continue
                raise SourceError(http_status.text(status))
        raise SourceError(f"more than {MAX_REDIRECTS} redirects")


async def read_source(
    source: Source,
    namespace: str,
    rules: FetchRules,
    credentials: SourceCredentials | None,
    body: ListReader,
    attempts_seen: Attempts | None = None,
    budget: Budget | None = None,
) -> None:
    """The source's list into ``body``: a URL's as it downloads."""
    budget = budget or Budget(rules.total_bytes)
    if source.url:
        await fetch(source.url, rules, body, credentials, attempts_seen, budget)
        return
    if source.config_map_ref:
        ref = source.config_map_ref
        cm = await kube.read_config_map(namespace, ref.name)
        labels = ((cm or {}).get("metadata") or {}).get("labels") or {}
        if cm is None or labels.get(c.LABEL_SOURCE_LIST) != "true":
            # One answer for both: a tenant learns nothing of a ConfigMap
            # that did not opt in, not even that it exists.
            raise SourceError(
                f"ConfigMap {ref.name} not found, or not labelled {c.LABEL_SOURCE_LIST}=true"
            )
        data = cm.get("data") or {}
        if ref.key not in data:
            raise SourceError(f"ConfigMap {ref.name} has no key {ref.key}")
        text = str(data[ref.key])
    else:
        text = "\n".join(source.inline or [])
    budget.take(len(text))
    await body.feed_text(text)


def bad_lines(report: ParseReport) -> str:
    """How many lines looked like proxies but were not, and where: never their text."""
    first = report.errors[0]
    return f"{report.error_count} {first.kind}s are not valid proxies (first: {first.where})"


async def scrape_one(
    source: Source,
    namespace: str,
    rules: FetchRules,
    credentials: SourceCredentials | None,
    sink: Sink,
    attempts_seen: Attempts | None = None,
    budget: Budget | None = None,
) -> SourceStatus:
    """One source read into ``sink``; its status counts the candidates it
    added (what it held before a failure stays: nothing done is lost)."""
    reader = ListReader(source.protocol, sink, rules.max_bytes, rules.check)
    try:
        await read_source(source, namespace, rules, credentials, reader, attempts_seen, budget)
    except (SourceError, InputTooLarge) as exc:
        return SourceStatus(
            source=source.label, ok=False, candidates=reader.added, message=str(exc)
        )
    finally:
        if attempts_seen is not None and source.url:
            attempts_seen.finished(source.label)
    report = reader.report
    ok = reader.found > 0
    message = bad_lines(report) if report.errors else ""
    if not ok:
        message = message or f"no proxies in {report.lines} lines"
    return SourceStatus(
        source=source.label,
        ok=ok,
        candidates=reader.added,
        errors=report.error_count,
        message=message,
    )


async def scrape(
    sources: list[Source],
    namespace: str,
    rules: FetchRules,
    credentials: dict[int, SourceCredentials] | None = None,
    attempts_seen: Attempts | None = None,
    sink: Sink | None = None,
) -> ScrapeResult:
    """Every source, ``rules.concurrency`` at a time, into ``sink`` (by
    default one in memory); ``credentials`` by the source's position.
    Raises LimitExceeded (the other reads cancelled) when the sources
    together pass a limit."""
    creds = credentials or {}
    budget = Budget(rules.total_bytes)
    gate = asyncio.Semaphore(rules.concurrency)
    into = sink if sink is not None else Gathered()

    async def one(i: int, source: Source) -> SourceStatus:
        async with gate:
            return await scrape_one(
                source, namespace, rules, creds.get(i), into, attempts_seen, budget
            )

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(i, s)) for i, s in enumerate(sources)]
    except BaseExceptionGroup as errors:
        # Not `except*`: Python before 3.11.4 (Debian bookworm's 3.11.2, the
        # image's) wraps an exception raised in its handler in a new group.
        exceeded = [e for e in errors.exceptions if isinstance(e, LimitExceeded)]
        if not exceeded:  # the first error as it was (a RedisError from the sink, say)
            raise errors.exceptions[0] from errors
        raise exceeded[0] from None
    return ScrapeResult(candidates=into.count, sources=[task.result() for task in tasks])
