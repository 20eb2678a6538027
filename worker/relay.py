"""The rotator's client connections, served by protocol callbacks.

Under wrk on the peers bench (64 clients, 8 upstreams) the rotator spent
about 0.18 ms of CPU per request, and a relay made of protocol callbacks
alone 0.03 ms: the rest was asyncio's streams (a StreamReader and a
StreamWriter each way, a task awaiting every read, a drain per write).
So a client connection is a protocol here. Its heads are parsed as they
arrive; a request without a body (what a scraper sends) goes out over a
kept-alive protocol connection to an http upstream, and the answer is
passed back by callbacks as it arrives, its end found by its framing
(:class:`proxyrefresh.worker.http1.BodyEnd`). Picking, retries, blame and
reports are the rotator's own (``Rotator.through``), unchanged, and so
is everything through a SOCKS or https upstream (a tunnel per target, on
the stream path's connections).

Anything else - CONNECT, a request with a body or ``Expect``, a head
that does not parse or is refused, the access log on - goes to the stream
path (``Rotator.handle``) with the bytes read so far, for the rest of the
connection: it answers what is wrong, as it always did.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from proxyrefresh.models import Protocol
from proxyrefresh.pool import PoolEntry
from proxyrefresh.worker.http1 import (
    MAX_HEAD,
    BadMessage,
    BodyEnd,
    Framing,
    Head,
    keeps_alive,
    parse_head,
    response_framing,
)
from proxyrefresh.worker.rotate import (
    Ask,
    Closed,
    Garbled,
    Outgoing,
    Refused,
    Silent,
    access_log,
    answer_framing,
    on_kept_or_fresh,
    target_answered,
)
from proxyrefresh.worker.upstream import UpstreamDown
from proxyrefresh.worker.upstream_pool import Key

if TYPE_CHECKING:
    from proxyrefresh.worker.rotate import Rotator

log = logging.getLogger("proxyrefresh.rotate")
# What an upstream connection calls with an answer's head, or what came instead.
Answered = Callable[[Head | None, Exception | None], None]


class UpstreamRelay(asyncio.Protocol):
    """One connection to an http upstream: it sends a request, hands back
    the answer's head, then passes the body to the client as it arrives,
    and may wait in ``Rotator.relays`` for the next request."""

    def __init__(self, key: Key) -> None:
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.answered: Answered | None = None  # while an answer's head is awaited
        self.asked = 0.0  # when (loop time), and for how long
        self.timeout = 0.0
        self.timer: asyncio.TimerHandle | None = None  # pending while anything was asked
        self.client: ClientConnection | None = None  # while its body is passed on
        self.end: BodyEnd | None = None
        self.reusable = False
        self.lost = False
        self.spoiled = False  # bytes came while nothing was asked
        self.held = False  # reading paused while the client cannot take more

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def usable(self) -> bool:
        closing = self.transport is None or self.transport.is_closing()
        return not (self.lost or self.spoiled or closing)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def hold(self, held: bool) -> None:
        """Stop reading (the client's buffer is full), or read on."""
        if self.transport is None or held == self.held or self.transport.is_closing():
            return
        self.held = held
        if held:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    def ask(self, request: bytes, timeout: float, answered: Answered) -> None:
        """Send ``request``; ``answered`` gets the answer's final head (1xx
        ones are passed over), or Silent, Closed or Garbled, as it comes."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self.answered = answered
        self.asked, self.timeout = loop.time(), timeout
        if self.timer is None:  # else the one pending looks again when it is due
            self.timer = loop.call_at(self.asked + timeout, self._look)
        self.transport.write(request)

    def send(self, request: bytes, timeout: float) -> asyncio.Future[Head]:
        """:meth:`ask`, for a task to await."""
        answer: asyncio.Future[Head] = asyncio.get_running_loop().create_future()

        def answered(head: Head | None, exc: Exception | None) -> None:
            if answer.done():
                return
            if exc is not None:
                answer.set_exception(exc)
            else:
                answer.set_result(cast(Head, head))

        self.ask(request, timeout, answered)
        return answer

    def _answer(self, head: Head | None, exc: Exception | None) -> None:
        answered, self.answered = self.answered, None
        if answered is not None:
            answered(head, exc)

    def _look(self) -> None:
        """The answer timeout, kept by one timer per connection that moves
        on while answers come in time, not one set and cancelled per request."""
        self.timer = None
        if self.answered is None:
            return
        due = self.asked + self.timeout
        loop = asyncio.get_running_loop()
        if loop.time() >= due:
            self._fail(Silent("no answer in time"))
        else:
            self.timer = loop.call_at(due, self._look)

    def _fail(self, exc: Exception) -> None:
        self._answer(None, exc)

    def data_received(self, data: bytes) -> None:
        if self.end is not None:
            self._body(data)
        elif self.answered is None:
            self.spoiled = True  # nothing asked for it: never trust this connection again
        else:
            self.buffer += data
            self._head()

    def _head(self) -> None:
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            raw = bytes(self.buffer[: end + 4])
            del self.buffer[: end + 4]
            try:
                head = parse_head(raw)
            except BadMessage as exc:
                self._fail(Garbled(str(exc)))
                return
            if not head.start[1].startswith("1"):  # an interim answer is not passed on
                self._answer(head, None)
                return
        if len(self.buffer) > MAX_HEAD:
            self._fail(Garbled(f"head larger than {MAX_HEAD} bytes"))

    def relay(self, client: ClientConnection, head: bytes, end: BodyEnd, reusable: bool) -> None:
        """Pass the answer on to ``client``: ``head`` (with what came of the
        body along with the upstream's head: one write), then the body as it comes."""
        self.client, self.end, self.reusable = client, end, reusable
        data = bytes(self.buffer)
        self.buffer.clear()
        if data or end.kind == "none":
            self._body(data, head)
        else:
            client.write(head)

    def _body(self, data: bytes, head: bytes = b"") -> None:
        assert self.end is not None
        try:
            at = self.end.feed(data)
        except BadMessage as exc:
            log.debug("the upstream's body broke off: %s", exc)
            self._finish(reusable=False, whole=False)
            return
        client = self.client
        assert client is not None
        if at < 0:
            client.write(head + data if head else data)
            return
        if at or head:
            client.write(head + data[:at])
        # Bytes past the body's end are no answer to anything: not kept.
        self._finish(self.reusable and at == len(data), whole=True)

    def _finish(self, reusable: bool, whole: bool) -> None:
        client, self.client, self.end = self.client, None, None
        if client is not None:
            client.answered(self, reusable, whole)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.answered is not None:
            if self.buffer.strip():
                self._fail(Garbled("the connection closed inside a head"))
            else:
                why = str(exc) if exc else "closed the connection without an answer"
                self._fail(Closed(why))
        elif self.end is not None:
            self._finish(reusable=False, whole=self.end.kind == "close")


async def open_relay(entry: PoolEntry, key: Key, timeout: float) -> UpstreamRelay:
    """A connection to an http upstream itself (it takes absolute-URI requests)."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            _, relay = await loop.create_connection(
                functools.partial(UpstreamRelay, key), entry.host, entry.port
            )
    except TimeoutError:
        raise UpstreamDown(f"connect timed out after {timeout:g}s") from None
    except OSError as exc:
        raise UpstreamDown(f"connect failed: {exc.strerror or exc}") from None
    return relay


class ClientConnection(asyncio.Protocol):
    """One client's connection, on the protocol level while its requests
    have no body (the stream path's from the first one that has)."""

    def __init__(self, rotator: Rotator) -> None:
        self.rotator = rotator
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.busy = False  # a request is on its way: what else comes waits
        self.closed = False
        self.handed_over = False
        self.task: asyncio.Task[None] | None = None
        self.idle: asyncio.TimerHandle | None = None  # pending while the connection lives
        self.since = 0.0  # when (loop time) it last began to wait for a request
        self.relaying: UpstreamRelay | None = None
        self.keep = True  # the connection stays open after the answer
        self.paused = False
        self.writable: asyncio.Future[None] | None = None

    # --- the connection --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.rotator.counters.connections += 1
        if access_log.isEnabledFor(logging.INFO):  # the access log is the stream path's
            self._hand_over()
        else:
            self._wait()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self._next()
        elif len(self.buffer) > MAX_HEAD and self.transport is not None:
            # Pipelined past a head's size: read on when it is their turn.
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        # A client that half-closes has left, as on the stream path: the
        # transport closes, and connection_lost lets go of its upstream.
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.idle is not None:
            self.idle.cancel()
        if self.handed_over:
            return
        self.rotator.counters.connections -= 1
        if self.task is not None and not self.task.done():
            self.task.cancel()  # its upstream is let go (Rotator.through)
        if self.relaying is not None:
            relaying, self.relaying = self.relaying, None
            relaying.client = relaying.end = None
            relaying.close()
        self._wake(ConnectionResetError("the client left"))

    def pause_writing(self) -> None:
        self.paused = True
        if self.relaying is not None:
            self.relaying.hold(True)

    def resume_writing(self) -> None:
        self.paused = False
        if self.relaying is not None:
            self.relaying.hold(False)
        self._wake(None)

    # --- a writer, for the stream path's copy of a tunnel's answer ---------

    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    async def drain(self) -> None:
        if self.closed:
            raise ConnectionResetError("the client left")
        if self.paused:
            self.writable = asyncio.get_running_loop().create_future()
            await self.writable

    def _wake(self, exc: Exception | None) -> None:
        writable, self.writable = self.writable, None
        if writable is not None and not writable.done():
            if exc is None:
                writable.set_result(None)
            else:
                writable.set_exception(exc)

    # --- requests --------------------------------------------------------

    def _wait(self) -> None:
        """Wait for the next request, for as long as the idle timeout allows."""
        self.busy = False
        loop = asyncio.get_running_loop()
        assert self.transport is not None
        self.since = loop.time()
        if self.idle is None:  # else the one pending looks again when it is due
            self.idle = loop.call_at(self.since + self.rotator.settings.idle_timeout, self._look)
        if len(self.buffer) > MAX_HEAD:
            self.transport.resume_reading()
        if self.buffer:
            self._next()

    def _look(self) -> None:
        """The idle timeout, kept by one timer per connection that moves on
        while requests come, not one set and cancelled per request."""
        self.idle = None
        if self.closed or self.handed_over or self.busy:
            return  # a request on its way: waiting for the next one sets it again
        due = self.since + self.rotator.settings.idle_timeout
        loop = asyncio.get_running_loop()
        if loop.time() >= due:
            assert self.transport is not None
            self.transport.close()
        else:
            self.idle = loop.call_at(due, self._look)

    def _next(self) -> None:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEAD:
                self._hand_over()  # which refuses it
            return
        plain = self.rotator.plain(bytes(self.buffer[: end + 4]))
        if plain is None:
            self._hand_over()
            return
        del self.buffer[: end + 4]
        self.busy = True
        self.rotator.counters.requests += 1
        if not self._at_once(*plain):
            self.task = asyncio.get_running_loop().create_task(self._serve(*plain))

    def _at_once(self, head: Head, ask: Ask, out: Outgoing) -> bool:
        """Send the request now, with no task, if a pick for it is waiting
        and so is a kept connection to that upstream: most requests of a
        busy rotator. A task (``_serve``) was a fifth of a request's CPU.
        What goes wrong goes on in one, as ``Rotator.through`` would."""
        rotator = self.rotator
        if ask.session:
            return False
        entry = rotator.picks.ready(ask.filters)
        if entry is None:
            return False
        kept = None
        if entry.protocol is Protocol.HTTP and not rotator.struck_out(entry):
            kept = rotator.relays.take((entry.id, ""))
        if kept is None:
            rotator.picks.give_back(ask.filters, entry)
            return False
        self.relaying = kept  # let go if the client leaves meanwhile
        sent = functools.partial(self._sent, head, ask, out, entry, kept, time.perf_counter())
        kept.ask(out.through_http(entry), rotator.settings.answer_timeout, sent)
        return True

    def _sent(
        self,
        head: Head,
        ask: Ask,
        out: Outgoing,
        entry: PoolEntry,
        up: UpstreamRelay,
        started: float,
        response: Head | None,
        exc: Exception | None,
    ) -> None:
        """The answer's head (or what came instead) to a request sent at once."""
        self.relaying = None
        if self.closed:
            return  # the client left: ``up`` was let go
        framing = None
        if response is not None:
            try:
                framing = answer_framing(entry, response, out.method)
            except Garbled as garbled:
                exc = garbled
        if response is None or framing is None:
            up.close()
            failed = None  # a kept connection that closed is no failure: a fresh try
            if isinstance(exc, ConnectionError) and not isinstance(exc, Closed):
                failed = (entry, exc)
            self.task = asyncio.get_running_loop().create_task(self._serve(head, ask, out, failed))
            return
        self.rotator.report(entry, True, (time.perf_counter() - started) * 1000)
        self._relay(head, up, response, framing)

    def _hand_over(self) -> None:
        """The rest of the connection to the stream path, with what came so far."""
        assert self.transport is not None
        if self.idle is not None:
            self.idle.cancel()
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=MAX_HEAD, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        self.transport.set_protocol(protocol)
        protocol.connection_made(self.transport)
        if self.buffer:
            reader.feed_data(bytes(self.buffer))
            self.buffer.clear()
        writer = asyncio.StreamWriter(self.transport, protocol, reader, loop)
        self.handed_over = True
        self.rotator.counters.connections -= 1  # counted again where it goes
        self.rotator.serve_streams(reader, writer)

    async def _serve(
        self,
        head: Head,
        ask: Ask,
        out: Outgoing,
        failed: tuple[PoolEntry, ConnectionError] | None = None,
    ) -> None:
        rotator = self.rotator
        attempt = functools.partial(self._attempt, out)
        try:
            exchanged = await rotator.through(ask, attempt, True, target_answered, failed)
        except Refused as exc:
            rotator.counters.refused += 1
            self.write(exc.message)
            self._done(keep=exc.keep_open)
            return
        except asyncio.CancelledError:
            if self.closed:
                return  # the client left: its upstream was let go
            raise
        except Exception:  # nothing may leave a client waiting for ever
            log.exception("a request failed in the rotator")
            self._done(keep=False)
            return
        up, response, key = exchanged
        if isinstance(up, UpstreamRelay):  # its framing was checked: this is not a BadMessage
            self._relay(head, up, response, response_framing(response, out.method))
            return
        try:  # a tunnel's answer, on the stream path's connection
            keep = await rotator.relay_streams(head, out.method, (up, response, key), self)
        except (ConnectionError, OSError, BadMessage):
            keep = False
        self._done(keep)

    async def _attempt(self, out: Outgoing, entry: PoolEntry) -> tuple[Any, Head, Key]:
        """Send the request through ``entry``; its answer's head. A kept
        connection that turns out closed is replaced by a fresh one (the
        request has no body: it is whole in its head)."""
        rotator = self.rotator
        if entry.protocol is not Protocol.HTTP:
            return await rotator.exchange(out, None, entry)
        key: Key = (entry.id, "")
        request = out.through_http(entry)
        timeout = rotator.settings.answer_timeout

        async def send(up: UpstreamRelay) -> Head:
            answer = await up.send(request, timeout)
            answer_framing(entry, answer, out.method)
            return answer

        opening = functools.partial(open_relay, entry, key, rotator.settings.connect_timeout)
        up, answer = await on_kept_or_fresh(rotator.relays.take(key), opening, send)
        return up, answer, key

    def _relay(self, head: Head, up: UpstreamRelay, response: Head, framing: Framing) -> None:
        self.keep = keeps_alive(head) and framing.kind != "close"
        answer_head = self.rotator.answer_head(response, self.keep)
        self.relaying = up
        up.hold(self.paused)
        reusable = keeps_alive(response) and framing.kind != "close"
        up.relay(self, answer_head, BodyEnd(framing), reusable)

    def answered(self, up: UpstreamRelay, reusable: bool, whole: bool) -> None:
        """``up`` passed the whole answer on (or broke off: ``whole`` False)."""
        self.relaying = None
        up.hold(False)
        if reusable:
            self.rotator.relays.give(up.key, up)
        else:
            up.close()
        self._done(self.keep and whole)

    def _done(self, keep: bool) -> None:
        self.task = None
        if self.closed:
            return
        if keep:
            self._wait()
        else:
            assert self.transport is not None
            self.transport.close()
