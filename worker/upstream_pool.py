"""Kept-alive connections to upstreams, for the rotator.

Opening a connection to an upstream (and, through a SOCKS or CONNECT
upstream, its tunnel to the target) cost more than relaying the request
itself. An answer the upstream framed (a length, chunks, or no body) on a
connection neither side closes leaves the connection reusable: it waits
here, under its upstream (and, for a tunnel, its target), for the next
request that upstream is picked for. The rotator keeps two of these: the
stream path's connections (:class:`KeptStreams`) and the protocol relay's
(worker/relay.py); a connection says itself whether it may still be used.

Bounded: as many idle connections per upstream and target as requests
went through it at once (up to ``per_key``), at most ``total`` in all, none older than
``idle_seconds`` (an upstream's own idle timeout may close one first: the
rotator then opens a fresh one and holds nothing against the upstream), and
an upstream that fails loses all of its own at once.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from proxyrefresh.worker.upstream import Streams

# (upstream id, target "host:port" for a tunnel, or "" for a plain http upstream)
Key = tuple[str, str]


class Kept(Protocol):
    """A connection that may wait here: the stream path's, or the relay's."""

    def usable(self) -> bool:
        """Still open at both ends, nothing unread on it."""

    def close(self) -> None: ...


C = TypeVar("C", bound=Kept)


@dataclass(frozen=True)
class KeptStreams:
    """The stream path's connection, as it waits here."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    @property
    def streams(self) -> Streams:
        return self.reader, self.writer

    def usable(self) -> bool:
        return not self.reader.at_eof() and not self.writer.is_closing()

    def close(self) -> None:
        self.writer.close()


@dataclass
class UpstreamConnections(Generic[C]):
    # Idle connections kept per upstream and target: 64 clients over 8
    # upstreams hold about 8 each at once, and with 4 kept half the requests
    # opened a connection (bench.rotator --peers).
    per_key: int = 32
    keys: int = 1024  # upstream-and-target pairs with idle connections (the oldest goes)
    total: int = 2048  # idle connections in all (the oldest pair's go first)
    idle_seconds: float = 20.0
    clock: Callable[[], float] = time.monotonic
    _idle: OrderedDict[Key, deque[tuple[C, float]]] = field(default_factory=OrderedDict)
    _count: int = 0  # connections in ``_idle`` (counted here: a request must not walk them all)
    reused: int = 0  # requests that found a connection waiting

    def take(self, key: Key) -> C | None:
        """A kept connection for ``key`` that still looks open, if any."""
        waiting = self._idle.get(key)
        now = self.clock()
        while waiting:
            kept, since = waiting.pop()  # the freshest first
            self._count -= 1
            if now - since < self.idle_seconds and kept.usable():
                if not waiting:
                    del self._idle[key]
                self.reused += 1
                return kept
            kept.close()
        self._idle.pop(key, None)
        return None

    def give(self, key: Key, kept: C) -> None:
        """Keep ``kept`` for the next request through ``key``."""
        waiting = self._idle.setdefault(key, deque())
        self._idle.move_to_end(key)
        waiting.append((kept, self.clock()))
        self._count += 1
        while len(waiting) > self.per_key:
            waiting.popleft()[0].close()
            self._count -= 1
        while len(self._idle) > self.keys or (len(self._idle) > 1 and self._count > self.total):
            self._close(self._idle.popitem(last=False)[1])

    def drop(self, upstream: str) -> None:
        """Close every kept connection of an upstream that failed."""
        for key in [k for k in self._idle if k[0] == upstream]:
            self._close(self._idle.pop(key))

    def close(self) -> None:
        while self._idle:
            self._close(self._idle.popitem()[1])

    def _close(self, gone: deque[tuple[C, float]]) -> None:
        """Close connections taken out of ``_idle``, and count them out."""
        self._count -= len(gone)
        for connection, _ in gone:
            connection.close()

    def __len__(self) -> int:
        return self._count
