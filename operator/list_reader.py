"""A source's list parsed as it arrives, its candidates handed on a piece at a time.

A scrape used to hold every source's body, then every candidate, until the
chunks were written: a million candidates took the operator to 388 MiB. Here
a body is parsed as it is downloaded and each piece's proxies go at once to
a :class:`Sink` (in the operator the run's spool in Redis, which
de-duplicates them: operator/spool.py), so what the operator holds no longer
grows with the number of candidates. A JSON document is the exception: it is
read whole (under the source's cap) and parsed by its structure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from proxyrefresh.models import Protocol as ProxyProtocol
from proxyrefresh.parse import (
    PIECE_LINES,
    Candidates,
    LineSplitter,
    ParseReport,
    parse_lines,
    parse_pieces,
)

JSON_STARTS = (b"[", b"{")


class Sink(Protocol):
    """Where a refresh's candidates go, de-duplicated across its sources."""

    count: int  # unique candidates so far

    async def add(self, found: Candidates) -> int:
        """Keep the proxies not kept before; returns how many were new."""
        ...


class Gathered:
    """A sink in memory (the candidates of a list the CLI checks, and tests)."""

    def __init__(self) -> None:
        self.candidates = Candidates()
        self.count = 0

    async def add(self, found: Candidates) -> int:
        added = len(found) - self.candidates.extend(found)
        self.count += added
        return added


class ListReader:
    """One source's body, fed as it arrives (:meth:`feed`, then :meth:`end`).

    ``report`` counts its lines, errors and the rest; ``found`` is how many
    proxies it held (repeats too), ``added`` how many of them were new to the refresh (its
    other sources, read at the same time, may have had them first). A
    download that is tried again starts over (:meth:`restart`); what it
    handed on before stays, and is not counted twice."""

    def __init__(
        self, protocol: ProxyProtocol, sink: Sink, max_bytes: int, check: Callable[[int], None]
    ) -> None:
        self.protocol = protocol
        self.sink = sink
        self.max_bytes = max_bytes
        self.check = check  # raises once the refresh's count passes a limit
        self.added = 0
        self.restart()

    def restart(self) -> None:
        self.report = ParseReport()
        self.found = 0
        self._lines = LineSplitter()
        self._next_line = 1
        # Leading bytes until the first non-blank one says JSON or not; None after.
        self._head: bytes | None = b""
        self._document: bytearray | None = None

    async def feed(self, data: bytes) -> None:
        if self._document is not None:
            self._document += data
            return
        if self._head is not None:
            head = self._head + data
            start = head.lstrip()[:1]
            if not start:
                self._head = head
                return
            self._head = None
            if start in JSON_STARTS:
                self._document = bytearray(head)
                return
            data = head
        await self._parse_lines(self._lines.feed(data))

    async def end(self) -> None:
        if self._document is not None:
            text = self._document.decode("utf-8", errors="replace")
            self._document = None
            await self.feed_text(text)
            return
        if self._head:  # blanks only
            await self._parse_lines(self._lines.feed(self._head))
        await self._parse_lines(self._lines.end())

    async def feed_text(self, text: str) -> None:
        """A whole list in hand (a ConfigMap's, an inline one, a JSON document)."""
        for piece in parse_pieces(text, self.protocol, self.max_bytes):
            await self._take(piece)

    async def _parse_lines(self, lines: list[str]) -> None:
        for i in range(0, len(lines), PIECE_LINES):
            part = lines[i : i + PIECE_LINES]
            await self._take(parse_lines(part, self.protocol, self._next_line, keep_proxies=True))
            self._next_line += len(part)

    async def _take(self, piece: ParseReport) -> None:
        self.found += len(piece.candidates) + piece.duplicates
        self.added += await self.sink.add(piece.candidates)
        piece.candidates = Candidates()
        self.report.merge(piece)
        self.check(self.sink.count)
        await asyncio.sleep(0)  # the loop is every refresh's and kopf's
