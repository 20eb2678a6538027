"""``proxyrefresh rotate``: one forward-proxy address over a whole pool.

Each request (or CONNECT tunnel) leaves through the next proxy the pool
picks for the client's filters, and every upstream outcome goes back to the
pool as a report, so the pool's scoring learns from real traffic: a dead
upstream is dropped after its third failure in a row instead of staying in
rotation until the next refresh. A failed upstream is retried on another
one, invisibly to the client, whenever nothing reached the target yet, or
the request is idempotent and has no body.

The rotator adds nothing toward the target: no Via, no X-Forwarded-For, no
field of its own; hop-by-hop fields are consumed (RFC 9110 section 7.6.1).
Not sending Via is a deliberate departure from RFC 9110 section 7.6.3: a
rotator exists to not be seen.

A client narrows the listener's filters per request with
``X-Proxyrefresh-Protocol``, ``X-Proxyrefresh-Min-Anonymity``,
``X-Proxyrefresh-Max-Latency-Ms`` and ``X-Proxyrefresh-Session`` fields
(never forwarded), or in its proxy user name, as commercial rotators do:
``[USER][-session-ID][-protocol-P][-anonymity-A][-latency-MS]``. A session
keeps one upstream until it fails or the session's time runs out.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import functools
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from redis.exceptions import RedisError

from proxyrefresh.models import Anonymity, Protocol
from proxyrefresh.pool import AsyncPool, NoMatch, PickFilter, PoolEntry, describe
from proxyrefresh.redact import redis_problem
from proxyrefresh.worker.http1 import (
    IDEMPOTENT,
    NO_BODY,
    BadMessage,
    Framing,
    Head,
    Writer,
    answer,
    copy_body,
    digits,
    forwarded_fields,
    keeps_alive,
    parse_head,
    pipe,
    read_head,
    render,
    request_framing,
    response_framing,
)
from proxyrefresh.worker.picks import Picks
from proxyrefresh.worker.rotate_settings import RotatorSettings
from proxyrefresh.worker.sessions import SharedSessions
from proxyrefresh.worker.upstream import (
    Streams,
    TargetUnreachable,
    TunnelRefused,
    UpstreamDown,
    authorization,
    open_plain,
    open_tunnel,
)
from proxyrefresh.worker.upstream_pool import Kept, KeptStreams, Key, UpstreamConnections

if TYPE_CHECKING:
    from aiohttp import web

    from proxyrefresh.worker.relay import UpstreamRelay

log = logging.getLogger("proxyrefresh.rotate")
# One line per request or tunnel (``rotate -v``): off unless its level is INFO.
access_log = logging.getLogger("proxyrefresh.rotate.access")
CONTROL_PREFIX = "x-proxyrefresh-"
USER_KEYS = ("session", "protocol", "anonymity", "latency")
REPORT_BATCH = 500  # outcomes per report call (a script blocks Redis while it runs)
# How long outcomes gather before a report call: a proxy's successes in one
# call are one run for the script (proxyrefresh.pool.report_runs), so at
# thousands of requests a second Redis applies one run per upstream each
# time, not one outcome per request. The rotator itself holds a failing
# upstream out at once (``struck_out``).
REPORT_LINGER = 0.05
MAX_DRAWS = 8  # picks per attempt before giving up on finding an untried upstream
AHEAD_SECONDS = 1.0  # how long a pick drawn ahead may wait for its request
MAX_AHEAD = 64  # filters with picks drawn ahead (the oldest is let go first)
MAX_AUTHORITY = 270  # a host name's 253 characters, brackets, a colon and a port
STRIKE_SECONDS = 60.0  # how long failures in a row keep an upstream out here
MAX_STRIKES_KEPT = 10_000  # upstreams whose recent failures are remembered here
GONE_POLL = 0.25  # how often a client waiting on an upstream is checked for having left
T = TypeVar("T")
K = TypeVar("K", bound=Kept)


@dataclass
class Exchange:
    """One request or tunnel as the access log tells it: who asked for what,
    through which upstream (its URL without password), what came back."""

    client: str
    method: str
    target: str
    started: float = field(default_factory=time.perf_counter)
    upstream: str = "-"
    status: int = 0

    def line(self) -> str:
        ms = (time.perf_counter() - self.started) * 1000
        target = self.target if self.method == "CONNECT" else urlsplit(self.target).netloc
        return (
            f"{self.client} {self.method} {target} {self.status or '-'} "
            f"via {self.upstream} {ms:.0f}ms"
        )


# The exchange of the connection this task serves (each connection is its own task).
_exchange: ContextVar[Exchange | None] = ContextVar("exchange", default=None)


def _noted(**what: str | int) -> None:
    """Note on the current exchange, if the access log keeps one."""
    exchange = _exchange.get()
    if exchange is not None:
        for name, value in what.items():
            setattr(exchange, name, value)


class NoAnswer(ConnectionError):
    """The request went out and no usable answer came back."""


class Garbled(NoAnswer):
    """What came back is no HTTP answer (or the upstream's own 407): the
    upstream's fault, whatever the target did."""


class Silent(NoAnswer):
    """Nothing came back: the connection closed, was reset, or the answer
    did not come in time. The upstream or the target may be to blame; only
    another upstream's answer to the same request tells (``through``)."""


class Closed(Silent):
    """The connection closed or was reset before any answer: on a kept
    connection, most often the upstream's idle timeout, not a failure."""


class ClientGone(ConnectionError):
    """The client closed its connection while its upstream was being found."""


class Refused(Exception):
    """The rotator answers the client itself (an error, or 407). Only a 407
    to a request without a body keeps the connection (for the answer to
    the challenge); after any other the connection closes."""

    def __init__(
        self,
        status: int,
        reason: str,
        body: str,
        fields: list[tuple[str, str]],
        keep_open: bool = False,
    ):
        super().__init__(body)
        self.status = status
        self.keep_open = keep_open
        self.message = answer(status, reason, body + "\n", fields)


def refused(status: int, reason: str, body: str) -> Refused:
    return Refused(status, reason, f"proxyrefresh rotate: {body}", [("Connection", "close")])


def unreachable(exc: RedisError) -> Refused:
    return refused(503, "Service Unavailable", f"the pool is unreachable: {redis_problem(exc)}")


@dataclass(frozen=True)
class Ask:
    """What a client asked of the pool: filters and an optional session."""

    filters: PickFilter
    session: str | None = None


def user_params(user: str) -> tuple[str, dict[str, str]]:
    """``alice-session-abc-anonymity-elite`` -> (``alice``, {session: abc, ...})."""
    tokens = user.split("-")
    for i, token in enumerate(tokens):
        if token in USER_KEYS and i + 1 < len(tokens):
            params = dict(zip(tokens[i::2], tokens[i + 1 :: 2], strict=False))
            return "-".join(tokens[:i]), params
    return user, {}


def basic(value: str) -> tuple[str, str] | None:
    """The (user, password) of a Basic credentials field, if it is one."""
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(token.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password


def credentials(head: Head) -> tuple[str, str] | None:
    return basic(head.get("proxy-authorization") or "")


def client_ask(head: Head, settings: RotatorSettings) -> Ask:
    """The listener's filters, narrowed by the client's fields and user name.
    A value that makes no sense is a 400 naming it."""
    user = (credentials(head) or ("", ""))[0]
    params = user_params(user)[1] if user else {}
    asked = {
        "protocol": head.get(CONTROL_PREFIX + "protocol") or params.get("protocol"),
        "anonymity": head.get(CONTROL_PREFIX + "min-anonymity") or params.get("anonymity"),
        "latency": head.get(CONTROL_PREFIX + "max-latency-ms") or params.get("latency"),
    }
    session = head.get(CONTROL_PREFIX + "session") or params.get("session")
    listener = listener_ask(settings)
    if not session and not any(asked.values()):  # most requests ask for nothing
        return listener
    try:
        flt = narrow(listener.filters, **asked)
    except ValueError as exc:
        raise refused(400, "Bad Request", f"bad filter: {exc}") from None
    return Ask(flt, session or None)


def listener_filter(settings: RotatorSettings) -> PickFilter:
    return listener_ask(settings).filters


def listener_ask(settings: RotatorSettings) -> Ask:
    """What a client that asks for nothing gets (both frozen, so shared):
    made once a listener, not once a request."""
    return _listener_ask(settings.protocol, settings.min_anonymity, settings.max_latency_ms)


@functools.lru_cache(maxsize=64)
def _listener_ask(
    protocol: Protocol | None, min_anonymity: Anonymity | None, max_latency_ms: float | None
) -> Ask:
    return Ask(PickFilter(protocol, min_anonymity, max_latency_ms))


def narrow(
    base: PickFilter,
    protocol: str | None = None,
    anonymity: str | None = None,
    latency: str | None = None,
) -> PickFilter:
    """``base`` narrowed by what a client asked: a client may ask for less
    than the listener allows, never more. ValueError names a bad value."""
    flt = base
    if protocol:
        wanted = Protocol(protocol.lower())
        if base.protocol is not None and wanted is not base.protocol:
            raise ValueError(f"this listener serves {base.protocol.value} proxies only")
        flt = replace(flt, protocol=wanted)
    if anonymity:
        level = Anonymity(anonymity.lower())
        if base.min_anonymity is None or level.at_least(base.min_anonymity):
            flt = replace(flt, min_anonymity=level)
    if latency:
        limit = float(latency)
        if not limit > 0:
            raise ValueError(f"a latency limit must be a positive number, got {latency!r}")
        if base.max_latency_ms is None or limit < base.max_latency_ms:
            flt = replace(flt, max_latency_ms=limit)
    return flt


def accepts(settings: RotatorSettings, given: tuple[str, str] | None) -> bool:
    """Whether a client's credentials (its user name less any parameters) are the ones wanted."""
    if not settings.auth_required:
        return True
    if given is None:
        return False
    user, _ = user_params(given[0])
    user_ok = settings.username is None or hmac.compare_digest(user, settings.username)
    return user_ok and hmac.compare_digest(given[1], settings.password or "")


def authority(text: str, default_port: int) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` (CONNECT's target, a URL's netloc
    without its user), or a 400 naming ``text``. Remembered: a split URL's
    port and host name cost more than all the rest of a request's target,
    and requests go to the same hosts again. Only the lengths a host and
    port can have: a client cannot fill the memory with long ones."""
    if len(text) <= MAX_AUTHORITY:
        found = _remembered_authority(text, default_port)
    else:
        found = _authority(text, default_port)
    if found is None:
        raise refused(400, "Bad Request", f"bad target {text[:100]!r}")
    return found


def _authority(text: str, default_port: int) -> tuple[str, int] | None:
    parts = urlsplit("//" + text)
    try:
        port = default_port if parts.port is None else parts.port
    except ValueError:
        return None
    if not parts.hostname or not 0 < port < 65536:
        return None
    return parts.hostname, port


_remembered_authority = functools.lru_cache(maxsize=4096)(_authority)


@dataclass
class Counters:
    """What the rotator has done since it started (the API's /healthz)."""

    connections: int = 0  # open client connections
    requests: int = 0
    tunnels: int = 0
    upstream_failures: int = 0
    retried: int = 0
    refused: int = 0  # answered by the rotator itself (4xx/5xx)
    by_status: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Outgoing:
    """An absolute-URI request as it goes upstream: its head rendered for an
    http upstream (absolute URI) and for a tunnel (origin form), each when
    first wanted."""

    method: str
    target: str
    host: str
    port: int
    framing: Framing
    fields: list[tuple[str, str]]
    origin: str  # the target in origin form: path and query

    @functools.cached_property
    def plain(self) -> bytes:
        return render((self.method, self.target, "HTTP/1.1"), self.fields)

    @functools.cached_property
    def tunneled(self) -> bytes:
        return render((self.method, self.origin, "HTTP/1.1"), self.fields)

    @classmethod
    def of(cls, head: Head, framing: Framing | None = None) -> Outgoing:
        """``framing``: the request's, if it is known already."""
        method, target, _ = head.start
        url = urlsplit(target)
        if url.scheme.lower() != "http":
            detail = "send https through CONNECT" if url.scheme else "this is a proxy"
            raise refused(400, "Bad Request", f"{detail}: absolute http:// URIs only")
        netloc = url.netloc.rpartition("@")[2]
        host, port = authority(netloc, 80)
        fields = forwarded_fields(head, drop_prefix=CONTROL_PREFIX)
        if "100-continue" in head.tokens("expect"):
            fields = [(n, v) for n, v in fields if n.lower() != "expect"]
        if head.get("host") is None:
            fields.insert(0, ("Host", netloc))
        origin = (url.path or "/") + (f"?{url.query}" if url.query else "")
        framing = request_framing(head) if framing is None else framing
        return cls(method, target, host, port, framing, fields, origin)

    def through_http(self, entry: PoolEntry) -> bytes:
        """The head for an http upstream, with its credentials if it has any."""
        auth = authorization(entry)
        if not auth:
            return self.plain
        return render((self.method, self.target, "HTTP/1.1"), self.fields + auth)


async def on_kept_or_fresh(
    kept: K | None, opening: Callable[[], Awaitable[K]], send: Callable[[K], Awaitable[T]]
) -> tuple[K, T]:
    """``send`` over ``kept``, a connection that waited for reuse, and, if
    it turns out closed (Closed), again over a fresh one from ``opening``:
    only a request whole in its head (no body) is given a kept one. A
    connection that fails is closed. Both paths' upstream connections."""
    if kept is not None:
        try:
            return kept, await send(kept)
        except BaseException as exc:
            kept.close()
            if not isinstance(exc, Closed):
                raise
    fresh = await opening()
    try:
        return fresh, await send(fresh)
    except BaseException:
        fresh.close()
        raise


def target_answered(exchanged: tuple[Any, Head, Key]) -> bool:
    """Whether an exchange's answer proves the target answers (not a gateway error about it)."""
    status = exchanged[1].start[1]
    return digits(status) and int(status) < 500


def answer_framing(entry: PoolEntry, response: Head, method: str) -> Framing:
    """Where ``response``'s body ends, if it is an answer to pass on;
    Garbled (the upstream's fault) if it is an http upstream's 407 (meant
    for us, not the client: the pool's credentials are wrong) or does not
    say where its body ends."""
    if response.start[1] == "407" and entry.protocol is Protocol.HTTP:
        raise Garbled("the upstream refused its credentials (407)")
    try:
        return response_framing(response, method)
    except BadMessage as exc:
        raise Garbled(str(exc)) from None


class Rotator:
    """Serves client connections; one per pool and listener."""

    def __init__(self, pool: AsyncPool, settings: RotatorSettings) -> None:
        self.pool, self.settings = pool, settings
        self.sessions = SharedSessions(pool, settings.session_seconds, settings.max_sessions)
        self.counters = Counters()
        self._queued: list[tuple[str, bool, float | None]] = []
        self._strikes: dict[str, tuple[int, float]] = {}  # failures in a row, and when
        self._queue_wake = asyncio.Event()
        self.picks = Picks(self._get_many, AHEAD_SECONDS, MAX_AHEAD)
        self._occupied: frozenset[str] | None = None  # None: every group
        self.upstreams = UpstreamConnections[KeptStreams]()  # the stream path's
        self.relays: UpstreamConnections[UpstreamRelay] = UpstreamConnections()  # worker/relay.py
        self.others: dict[int, dict[str, Any]] = {}  # the other workers' snapshots, by slot
        self._handed: set[asyncio.Task[None]] = set()  # connections on the stream path
        self.retired: dict[str, Any] = {}  # what workers that ended had counted

    def snapshot(self) -> dict[str, Any]:
        """This process's counters, as /healthz shows them."""
        counters = dataclasses.asdict(self.counters)
        counters["sessions"] = len(self.sessions)
        counters["upstream_connections_reused"] = self.upstreams.reused + self.relays.reused
        counters["upstream_connections_idle"] = len(self.upstreams) + len(self.relays)
        counters["workers"] = 1  # summed over the processes that reported (worker/acceptors.py)
        return counters

    def totals(self) -> dict[str, Any]:
        """Every worker's counters as one (worker/acceptors.py)."""
        if not self.others and not self.retired:
            return self.snapshot()
        from proxyrefresh.worker.acceptors import summed

        return summed([self.snapshot(), self.retired, *self.others.values()])

    # --- the pool --------------------------------------------------------

    async def pick(self, ask: Ask, tried: set[str]) -> PoolEntry:
        if ask.session:
            try:
                held = await self.sessions.get(ask.session)
            except RedisError as exc:
                raise unreachable(exc) from None
            if held is not None and held.id not in tried:
                return held
        for _ in range(MAX_DRAWS):
            try:
                if tried:  # a retry: a fresh pick, not one drawn before the failure
                    entry = (await self._get_many(ask.filters, 1))[0]
                else:
                    entry = await self.picks.next(ask.filters)
            except NoMatch as exc:
                raise refused(503, "Service Unavailable", str(exc)) from None
            except RedisError as exc:
                raise unreachable(exc) from None
            if entry.id not in tried and not self.struck_out(entry):
                return entry
        raise refused(
            502,
            "Bad Gateway",
            f"every proxy that {describe(ask.filters).removeprefix('matches ')} failed: "
            f"tried {len(tried)}",
        )

    async def _get_many(self, flt: PickFilter, count: int) -> list[PoolEntry]:
        if self._occupied is not None:
            try:
                return await self.pool.get_many(count, self._occupied, **vars(flt))
            except NoMatch:
                # A group may have filled since the last look: ask again
                # naming every group (and keep doing so until the next look).
                self._occupied = None
        return await self.pool.get_many(count, None, **vars(flt))

    async def watch_groups(self, every: float = 1.0) -> None:
        """Keep the set of groups with members fresh (picks name only those)."""
        while True:
            try:
                self._occupied = await self.pool.occupied()
            except RedisError:
                self._occupied = None  # every group, until Redis answers again
            await asyncio.sleep(every)

    def struck_out(self, entry: PoolEntry) -> bool:
        """Whether ``entry`` failed here as often in a row as the pool drops
        a proxy for: its reports may still be on their way (or it was drawn
        ahead before they landed), so it is not tried again meanwhile."""
        count, last = self._strikes.get(entry.id, (0, 0.0))
        recent = time.monotonic() - last < STRIKE_SECONDS  # a refresh may bring it back
        return recent and count >= self.pool.calls.scoring.max_failures

    def report(self, entry: PoolEntry, ok: bool, latency_ms: float | None = None) -> None:
        """Queue an outcome for the pool; the client does not wait for it."""
        if ok:
            self._strikes.pop(entry.id, None)
        else:
            self.counters.upstream_failures += 1
            count, _ = self._strikes.pop(entry.id, (0, 0.0))
            self._strikes[entry.id] = (count + 1, time.monotonic())
            while len(self._strikes) > MAX_STRIKES_KEPT:
                self._strikes.pop(next(iter(self._strikes)))
        self._queued.append((entry.proxy, ok, latency_ms))
        self._queue_wake.set()

    async def send_reports(self) -> None:
        """Send queued outcomes, batched (all that queued in the last
        ``REPORT_LINGER``, or while the last batch was on its way), off every
        request's path."""
        while True:
            await self._queue_wake.wait()
            if len(self._queued) < REPORT_BATCH:
                await asyncio.sleep(REPORT_LINGER)  # let more outcomes queue up
            self._queue_wake.clear()
            batch, self._queued = self._queued[:REPORT_BATCH], self._queued[REPORT_BATCH:]
            if self._queued:
                self._queue_wake.set()  # the rest goes next, in calls as short
            if not batch:
                continue
            try:
                await self.pool.report_many(batch)  # NotInPool: dropped meanwhile
            except RedisError as exc:
                log.warning("%d reports lost: %s", len(batch), exc)

    async def drain_reports(self) -> None:
        """Send what is still queued (at shutdown)."""
        while self._queued:
            batch, self._queued = self._queued[:REPORT_BATCH], self._queued[REPORT_BATCH:]
            with contextlib.suppress(RedisError):
                await self.pool.report_many(batch)

    # --- client connections ----------------------------------------------

    def plain(self, raw: bytes) -> tuple[Head, Ask, Outgoing] | None:
        """The request whose head ``raw`` is, if the relay may serve it
        (worker/relay.py): idempotent, without a body or Expect, from a
        client with the credentials wanted, asking for something that makes
        sense. None: the stream path's, which answers what is wrong."""
        try:
            head = parse_head(raw)
            if head.start[0] not in IDEMPOTENT or request_framing(head) != NO_BODY:
                return None
            if head.get("expect") is not None or not accepts(self.settings, credentials(head)):
                return None
            return head, client_ask(head, self.settings), Outgoing.of(head, NO_BODY)
        except (BadMessage, Refused):
            return None

    def serve_streams(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve a connection the relay handed over on the stream path."""
        task = asyncio.get_running_loop().create_task(self.handle(reader, writer))
        self._handed.add(task)
        task.add_done_callback(self._handed.discard)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.counters.connections += 1
        try:
            await self._serve(reader, writer)
        except (ConnectionError, OSError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the client went away: nothing to answer
        finally:
            self.counters.connections -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        logged = access_log.isEnabledFor(logging.INFO)
        peer = writer.get_extra_info("peername")
        client = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "-"
        while True:
            try:
                async with asyncio.timeout(self.settings.idle_timeout):
                    raw = await read_head(reader)
                if not raw:
                    return
                head = parse_head(raw)
                if logged:
                    exchange = Exchange(client, head.start[0], head.start[1])
                    _exchange.set(exchange)
                if not accepts(self.settings, credentials(head)):
                    # A body left unread would be read as the next request:
                    # with one, the connection closes instead.
                    keep = request_framing(head) == NO_BODY
                    raise Refused(
                        407,
                        "Proxy Authentication Required",
                        "proxyrefresh rotate: proxy credentials wanted",
                        [("Proxy-Authenticate", 'Basic realm="proxyrefresh"')]
                        + ([] if keep else [("Connection", "close")]),
                        keep_open=keep,
                    )
                ask = client_ask(head, self.settings)
                if head.start[0] == "CONNECT":
                    self.counters.tunnels += 1
                    await self._tunnel(head, ask, reader, writer)
                    return
                self.counters.requests += 1
                if not await self._request(head, ask, reader, writer):
                    return
            except BadMessage as exc:
                _noted(status=400)
                writer.write(refused(400, "Bad Request", str(exc)).message)
                await writer.drain()
                return
            except Refused as exc:
                self.counters.refused += 1
                _noted(status=exc.status)
                writer.write(exc.message)
                await writer.drain()
                if exc.keep_open:
                    continue  # the client may answer the challenge on this connection
                return
            finally:
                done = _exchange.get()
                if done is not None:
                    _exchange.set(None)
                    access_log.info("%s", done.line())

    async def _tunnel(
        self, head: Head, ask: Ask, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        host, port = authority(head.start[1], 443)
        up = await self._or_gone(
            self.through(ask, lambda entry: open_tunnel(entry, host, port, self._ct)),
            reader,
            writer,
        )
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        _noted(status=200)
        await writer.drain()
        up_reader, up_writer = up
        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            up_writer.close()

    @property
    def _ct(self) -> float:
        return self.settings.connect_timeout

    async def through(
        self,
        ask: Ask,
        attempt: Callable[[PoolEntry], Awaitable[T]],
        resend_ok: bool = True,
        proves: Callable[[T], bool] = lambda _: True,
        failed: tuple[PoolEntry, ConnectionError] | None = None,
    ) -> T:
        """``attempt`` through the first upstream it succeeds with, trying up
        to ``retries`` others. A failure after the request went out
        (NoAnswer) is retried only when ``resend_ok``.

        What is held against an upstream: it could not be reached or
        finish its handshake, or it answered with something that is no
        answer. An upstream that answered at all (a 5xx of its own
        included) worked. One that went silent after the request (closed,
        reset, no answer in time) is blamed only if another upstream then
        got an answer to the same request that ``proves`` the target
        answers (not a gateway error about it); else the target did it,
        and no upstream is reported (a site that hangs up on everyone must
        not empty the pool). ``failed``: the first attempt was made already
        (the relay's, worker/relay.py), and this is what it met."""
        tried: set[str] = set()
        errors: list[str] = []
        silent: list[PoolEntry] = []  # blamed only if another upstream gets an answer
        for n in range(self.settings.retries + 1):
            if n == 0 and failed is not None:
                entry, exc = failed
                tried.add(entry.id)
                if self._held(exc, entry, ask, n, resend_ok, errors, silent):
                    continue
                break
            try:
                entry = await self.pick(ask, tried)
            except Refused:
                if not errors:
                    raise
                break  # no other upstream to try: say what the tried ones met
            tried.add(entry.id)
            started = time.perf_counter()
            try:
                result = await attempt(entry)
            except (TargetUnreachable, TunnelRefused, UpstreamDown, NoAnswer) as exc:
                if self._held(exc, entry, ask, n, resend_ok, errors, silent):
                    continue
                break
            if proves(result):  # the target answered this one: the silent were at fault
                for quiet in silent:
                    self._failed(quiet, ask, [], "silent", self.settings.retries)
            self.report(entry, True, (time.perf_counter() - started) * 1000)
            if ask.session:
                self.sessions.pin(ask.session, entry)
            _noted(upstream=entry.id)
            return result
        if silent and len(silent) == len(errors):
            raise self._target_silent(errors)
        raise self._exhausted(errors)

    def _held(
        self,
        exc: ConnectionError,
        entry: PoolEntry,
        ask: Ask,
        attempt: int,
        resend_ok: bool,
        errors: list[str],
        silent: list[PoolEntry],
    ) -> bool:
        """Note what an attempt met (and report the upstream if it is to
        blame); whether another upstream may be tried."""
        if isinstance(exc, TargetUnreachable):  # the upstream works: nothing to report
            errors.append(f"the target is unreachable: {exc}")
            return True
        if isinstance(exc, TunnelRefused) and entry.protocol is Protocol.HTTP:
            # An http proxy may serve plain requests and refuse tunnels:
            # that is not a failure of the proxy.
            errors.append(f"refused the tunnel: {exc}")
            return True
        if isinstance(exc, Silent):
            silent.append(entry)
            errors.append(str(exc))
            if resend_ok and attempt < self.settings.retries:
                self.counters.retried += 1
                return True
            return False
        self._failed(entry, ask, errors, str(exc), attempt)
        return resend_ok or not isinstance(exc, NoAnswer)

    def _target_silent(self, errors: list[str]) -> Refused:
        tried = len(errors)
        through = f"through {tried} upstreams" if tried > 1 else "through its upstream"
        return refused(
            502, "Bad Gateway", f"the target did not answer {through}: " + "; ".join(errors)
        )

    def _failed(
        self, entry: PoolEntry, ask: Ask, errors: list[str], why: str, attempt: int
    ) -> None:
        self.report(entry, False)
        self.upstreams.drop(entry.id)
        self.relays.drop(entry.id)
        if ask.session:
            self.sessions.drop(ask.session, entry)
        if attempt < self.settings.retries:
            self.counters.retried += 1
        errors.append(why)

    def _exhausted(self, errors: list[str]) -> Refused:
        tried = len(errors)
        return refused(
            502,
            "Bad Gateway",
            f"{tried} upstream{'s' if tried != 1 else ''} failed: " + "; ".join(errors),
        )

    async def _request(
        self, head: Head, ask: Ask, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Relay one absolute-URI request; True if the client connection stays open."""
        out = Outgoing.of(head)
        if "100-continue" in head.tokens("expect"):
            # Answered here, so the body comes at once (and is never asked twice).
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        resend_ok = out.method in IDEMPOTENT and out.framing == NO_BODY
        exchange = functools.partial(self.exchange, out, reader)
        exchanged = self.through(ask, exchange, resend_ok, target_answered)
        answered = await self._or_gone(exchanged, reader, writer)
        return await self.relay_streams(head, out.method, answered, writer)

    async def relay_streams(
        self, head: Head, method: str, exchanged: tuple[Streams, Head, Key], writer: Writer
    ) -> bool:
        """Relay the answer read on the stream path; whether the client's
        connection stays open. The upstream's connection is kept if it may be."""
        (up_reader, up_writer), response, key = exchanged
        reusable = False
        try:
            keep, reusable = await self._relay(head, method, response, up_reader, writer)
            return keep
        finally:
            if reusable:
                self.upstreams.give(key, KeptStreams(up_reader, up_writer))
            else:
                up_writer.close()

    async def exchange(
        self, out: Outgoing, reader: asyncio.StreamReader | None, entry: PoolEntry
    ) -> tuple[Streams, Head, Key]:
        """Send the request through ``entry`` (on a kept connection if there
        is one) and read the answer's head."""
        opening: Callable[[], Awaitable[Streams]]
        if entry.protocol is Protocol.HTTP:
            request = out.through_http(entry)
            key: Key = (entry.id, "")
            opening = functools.partial(open_plain, entry, self._ct)
        else:
            request = out.tunneled
            key = (entry.id, f"{out.host}:{out.port}")
            opening = functools.partial(open_tunnel, entry, out.host, out.port, self._ct)

        async def fresh() -> KeptStreams:
            return KeptStreams(*await opening())

        async def send(up: KeptStreams) -> Head:
            return await self._send(entry, request, out, reader, *up.streams)

        kept = self.upstreams.take(key) if out.framing == NO_BODY else None
        up, head = await on_kept_or_fresh(kept, fresh, send)
        return up.streams, head, key

    async def _send(
        self,
        entry: PoolEntry,
        request: bytes,
        out: Outgoing,
        reader: asyncio.StreamReader | None,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> Head:
        """Send ``request``'s head (its body from the client: ``reader``,
        None for a request without one) and read the answer's head."""
        up_writer.write(request)
        try:
            if reader is not None:
                await copy_body(out.framing, reader, up_writer)
        except (OSError, BadMessage, asyncio.IncompleteReadError):
            raise ClientGone("the request body did not arrive") from None
        return await self._answer_head(entry, up_reader, out.method)

    async def _answer_head(
        self, entry: PoolEntry, up_reader: asyncio.StreamReader, method: str
    ) -> Head:
        """The answer's head, read within the answer timeout; what went wrong as NoAnswer."""
        try:
            async with asyncio.timeout(self.settings.answer_timeout):
                response = await self._response_head(up_reader)
        except TimeoutError:
            raise Silent("no answer in time") from None
        except Silent:
            raise
        except BadMessage as exc:
            raise Garbled(str(exc)) from None
        except OSError as exc:
            raise Closed(exc.strerror or str(exc) or type(exc).__name__) from None
        answer_framing(entry, response, method)
        return response

    async def _or_gone(
        self, work: Awaitable[T], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> T:
        """``work``'s result, unless the client leaves first: then it is
        cancelled (no upstream is held for a client that is not there).
        ``work`` runs in this task, looked after by a timer: a task and a
        wait of their own per request cost the rotator a tenth of its CPU."""
        loop = asyncio.get_running_loop()
        current = asyncio.current_task()
        assert current is not None
        timers: list[asyncio.TimerHandle] = []  # the one pending
        left = False

        def look() -> None:
            nonlocal left
            if reader.at_eof() or writer.is_closing():
                left = True
                current.cancel()
            else:
                timers[0] = loop.call_later(GONE_POLL, look)

        timers.append(loop.call_later(GONE_POLL, look))
        try:
            return await work
        except asyncio.CancelledError:
            if left and current.uncancel() == 0:
                raise ClientGone("the client left") from None
            raise
        finally:
            timers[0].cancel()

    async def _response_head(self, up_reader: asyncio.StreamReader) -> Head:
        """The final response head (interim 1xx answers are consumed here)."""
        while True:
            raw = await read_head(up_reader)
            if not raw:
                raise Closed("closed the connection without an answer")
            response = parse_head(raw)
            if not response.start[1].startswith("1"):
                return response

    async def _relay(
        self,
        request: Head,
        method: str,
        response: Head,
        up_reader: asyncio.StreamReader,
        writer: Writer,
    ) -> tuple[bool, bool]:
        """Relay the answer; whether the client's connection stays open, and
        whether the upstream's may be kept (the whole answer came, framed,
        on a connection neither side closes)."""
        framing = response_framing(response, method)
        keep = keeps_alive(request) and framing.kind != "close"
        writer.write(self.answer_head(response, keep))
        await copy_body(framing, up_reader, writer)
        await writer.drain()
        return keep, keeps_alive(response) and framing.kind != "close"

    def answer_head(self, response: Head, keep: bool) -> bytes:
        """The answer's head as it goes to the client (counted by status)."""
        fields = forwarded_fields(response)
        if not keep:
            fields.append(("Connection", "close"))
        status = int(response.start[1]) if digits(response.start[1]) else 0
        self.counters.by_status[status] = self.counters.by_status.get(status, 0) + 1
        _noted(status=status)
        return render(("HTTP/1.1", response.start[1], response.start[2]), fields)


async def run(
    pool: AsyncPool,
    settings: RotatorSettings,
    listen: tuple[str, int],
    api_listen: tuple[str, int] | None = None,
    ready: Callable[[], None] | None = None,
    report_to: Connection | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT; reports still on their way are sent first.
    With ``settings.workers`` > 1 the first process (``report_to`` None)
    starts the others on the same port; each of them sends its counters
    to ``report_to`` (worker/acceptors.py)."""
    import signal

    from proxyrefresh.worker import acceptors
    from proxyrefresh.worker.relay import ClientConnection

    rotator = Rotator(pool, settings)
    server = await asyncio.get_running_loop().create_server(
        functools.partial(ClientConnection, rotator),
        *listen,
        backlog=1024,
        reuse_address=True,
        reuse_port=settings.workers > 1 or None,
    )
    runner = await _api(rotator, api_listen) if api_listen is not None else None
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(rotator.watch_groups()),
        asyncio.create_task(rotator.send_reports()),
    ]
    others = None
    if report_to is not None:
        tasks.append(asyncio.create_task(acceptors.send_counters(rotator, report_to, stop)))
    elif settings.workers > 1:
        others = acceptors.Acceptors(rotator, listen)
        others.start(settings.workers - 1)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready()
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        server.close()
        if others is not None:
            await others.stop()
        if runner is not None:
            await runner.cleanup()
        rotator.upstreams.close()
        rotator.relays.close()
        await rotator.drain_reports()
        await rotator.sessions.flush()


async def _api(rotator: Rotator, listen: tuple[str, int]) -> web.AppRunner:
    """The JSON API, probes and metrics, listening."""
    from aiohttp import web

    from proxyrefresh.worker.rotate_api import make_app

    runner = web.AppRunner(make_app(rotator), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, *listen, reuse_address=True).start()
    return runner
