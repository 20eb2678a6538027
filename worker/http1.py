"""HTTP/1.1 messages as a forward proxy relays them (RFC 9110, RFC 9112).

The rotator reads a client's request head, decides where it goes, and
relays the bytes of both bodies as they are: it never re-encodes a body, so
it only needs to know where each message ends. These are the pure parts
(parsing heads, hop-by-hop headers, framing) plus the stream copies; they
are unit-tested without a socket.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Protocol

MAX_HEAD = 64 * 1024  # a head larger than this is refused (431 / 502)
COPY_BUFFER = 64 * 1024
CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")

# Hop-by-hop fields (RFC 9110 section 7.6.1): meant for one connection, so a
# proxy consumes them and never forwards them; plus any field the
# Connection header names. Transfer-Encoding is hop-by-hop too, but the
# body is relayed in the framing it came in, so it travels with it.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "proxy-connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "proxy-authenticate",
    }
)
# Requests that may be sent again when an upstream failed after the request
# went out (RFC 9110 section 9.2.2: idempotent methods).
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


class Writer(Protocol):
    """Where a body is copied to: a StreamWriter, or the relay's client
    connection (worker/relay.py)."""

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...


class BadMessage(ValueError):
    """Not an HTTP/1.x message this proxy can relay."""


@dataclass(frozen=True)
class Framing:
    """Where a body ends: ``length`` bytes, chunked, at the close, or empty."""

    kind: str  # "none", "length", "chunked", "close"
    length: int = 0


NO_BODY = Framing("none")


@dataclass
class Head:
    """A request or response head: the start line's parts and the fields in order."""

    start: tuple[str, str, str]  # (method, target, version) or (version, status, reason)
    fields: list[tuple[str, str]] = field(default_factory=list)

    # Field values by lower-case name, made at the first look (a request's
    # head is looked up about ten times on its way through the rotator).
    _by_name: dict[str, str] | None = field(default=None, init=False, repr=False, compare=False)

    def get(self, name: str) -> str | None:
        """The field's value, repeated fields joined with commas."""
        if self._by_name is None:
            by_name: dict[str, str] = {}
            for n, v in self.fields:
                key = n.lower()
                by_name[key] = f"{by_name[key]}, {v}" if key in by_name else v
            self._by_name = by_name
        return self._by_name.get(name)

    def tokens(self, name: str) -> set[str]:
        value = self.get(name)
        if not value:
            return set()
        return {t.strip().lower() for t in value.split(",") if t.strip()}

    def without(self, names: set[str] | frozenset[str]) -> list[tuple[str, str]]:
        return [(n, v) for n, v in self.fields if n.lower() not in names]

    @property
    def version(self) -> str:
        """The HTTP version of either kind of head."""
        return self.start[0] if self.start[0].startswith("HTTP/") else self.start[2]


def parse_head(raw: bytes) -> Head:
    """A head up to (and including) its blank line. Hand-written: httptools
    (llhttp) parses a bare head in about half the time, but the rotator
    wants its fields as text, and through its callbacks the whole took 1.1-1.4
    times as long as this one split; this one refuses every malformed head
    llhttp does, and an HTTP/2.0 start line besides (bench/http1_parsers.py)."""
    try:
        text = raw.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        raise BadMessage("undecodable head") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise BadMessage(f"malformed start line {lines[0][:80]!r}")
    if not (parts[2].startswith("HTTP/1.") or parts[0].startswith("HTTP/1.")):
        raise BadMessage(f"not HTTP/1.x: {lines[0][:80]!r}")
    fields: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        if "\r" in line or "\n" in line or "\x00" in line:
            # A next hop may end the line there: a field smuggled in (RFC 9112 2.2).
            raise BadMessage(f"a bare CR, LF or NUL in header line {line[:80]!r}")
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise BadMessage(f"malformed header line {line[:80]!r}")
        fields.append((name, value.strip()))
    return Head((parts[0], parts[1], parts[2]), fields)


def forwarded_fields(head: Head, drop_prefix: str = "") -> list[tuple[str, str]]:
    """The head's fields without hop-by-hop ones (and those Connection
    names), nor any whose name starts with ``drop_prefix`` (the rotator's
    own control headers)."""
    drop: frozenset[str] | set[str] = HOP_BY_HOP
    if head.get("connection") is not None:
        drop = drop | head.tokens("connection")
    if head.get("transfer-encoding") is not None:
        # It overrides Content-Length, which an intermediary MUST then remove
        # (RFC 9112 6.3): a next hop that read by the length would split the
        # message where this proxy did not.
        drop = drop | {"content-length"}
    if not drop_prefix:
        return head.without(drop)
    # One pass, each name lowered once: this runs for every request.
    return [
        (n, v)
        for n, v in head.fields
        if (low := n.lower()) not in drop and not low.startswith(drop_prefix)
    ]


def render(start: tuple[str, str, str], fields: list[tuple[str, str]]) -> bytes:
    lines = [" ".join(start), *(f"{n}: {v}" for n, v in fields), "", ""]
    return "\r\n".join(lines).encode("latin-1")


def request_framing(head: Head) -> Framing:
    """RFC 9112 section 6.3 for a request: chunked, a length, or no body.
    Both a coding and a length is refused, as the RFC allows: a request
    smuggling attempt far more often than a client's slip."""
    coding = head.get("transfer-encoding")
    if coding is None:
        return _length(head) or NO_BODY
    if head.get("content-length") is not None:
        raise BadMessage("a request with both Transfer-Encoding and Content-Length")
    if "chunked" in head.tokens("transfer-encoding"):
        return Framing("chunked")
    if coding:
        raise BadMessage("a request's transfer coding must end in chunked")
    return NO_BODY


def response_framing(head: Head, method: str) -> Framing:
    """RFC 9112 section 6.3 for a response to ``method``; its status code
    three digits, or BadMessage."""
    code = head.start[1]
    if len(code) != 3 or not digits(code):
        raise BadMessage(f"bad status code {code[:40]!r}")
    status = int(code)
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return NO_BODY
    coding = head.get("transfer-encoding")
    if coding is None:
        return _length(head) or Framing("close")
    if "chunked" in head.tokens("transfer-encoding"):
        return Framing("chunked")
    if coding:
        return Framing("close")
    return _length(head) or Framing("close")


def digits(text: str) -> bool:
    """ASCII digits only: str.isdigit also takes a superscript two (latin-1
    0xb2), on which int raises; an upstream or a checked proxy may send one."""
    return text.isascii() and text.isdecimal()


def _length(head: Head) -> Framing | None:
    value = head.get("content-length")
    if value is None:
        return None
    if digits(value):  # the usual one: a bare number
        return Framing("length", int(value)) if int(value) else NO_BODY
    values = {v.strip() for v in value.split(",")}
    if len(values) != 1 or not digits(next(iter(values))):
        raise BadMessage(f"bad Content-Length {value[:40]!r}")
    length = int(next(iter(values)))
    return Framing("length", length) if length else NO_BODY


def keeps_alive(head: Head) -> bool:
    """Whether the sender of ``head`` wants its connection kept open."""
    connection = head.tokens("connection") | head.tokens("proxy-connection")
    if "close" in connection:
        return False
    return head.version == "HTTP/1.1" or "keep-alive" in connection


def chunk_size(line: bytes) -> int:
    """A chunk-size line's size (its extensions ignored). Hex digits only:
    ``int(_, 16)`` would take ``0x10``, ``-1`` or ``1_0``, which a next hop
    may read otherwise (a body split where this proxy did not split it)."""
    size_text = line.split(b";", 1)[0].strip()
    if CHUNK_SIZE.fullmatch(size_text) is None:
        raise BadMessage(f"bad chunk size {size_text[:20]!r}")
    return int(size_text, 16)


class BodyEnd:
    """Where a body in ``framing`` ends, found in its bytes as they arrive
    (the protocol relay's copy of :func:`copy_body`: it sees the bytes in
    whatever pieces the socket gives, and passes them on as they are)."""

    MAX_LINE = 4096  # a chunk-size or trailer line longer than this is refused

    def __init__(self, framing: Framing) -> None:
        self.kind = framing.kind
        self.left = framing.length  # body bytes ("length") or chunk bytes and CRLF ("chunked")
        self.line = bytearray()  # a chunk-size or trailer line read so far
        self.trailers = False  # past the last chunk

    def feed(self, data: bytes) -> int:
        """How many of ``data``'s bytes end the body, or -1 if it goes on
        past them. BadMessage for a chunk size that is not one."""
        if self.kind == "none":
            return 0
        if self.kind == "close":
            return -1
        if self.kind == "length":
            if len(data) < self.left:
                self.left -= len(data)
                return -1
            end, self.left = self.left, 0
            return end
        return self._chunked(data)

    def _chunked(self, data: bytes) -> int:
        at = 0
        while at < len(data):
            if self.left:
                step = min(self.left, len(data) - at)
                self.left -= step
                at += step
                continue
            newline = data.find(b"\n", at)
            if newline < 0:
                self._take(data[at:])
                return -1
            self._take(data[at : newline + 1])
            at = newline + 1
            line, self.line = bytes(self.line), bytearray()
            if self.trailers:
                if line in (b"\r\n", b"\n"):
                    return at
                continue
            size = chunk_size(line)
            if size == 0:
                self.trailers = True
            else:
                self.left = size + 2  # the chunk and its CRLF
        return -1

    def _take(self, piece: bytes) -> None:
        self.line += piece
        if len(self.line) > self.MAX_LINE:
            raise BadMessage("a chunk-size or trailer line too long")


async def read_head(reader: asyncio.StreamReader) -> bytes:
    """The next head, or b"" at a clean end of stream before one began."""
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise BadMessage("the connection closed inside a head") from None
        return b""
    except asyncio.LimitOverrunError:
        raise BadMessage(f"head larger than {MAX_HEAD} bytes") from None


async def copy_body(framing: Framing, reader: asyncio.StreamReader, writer: Writer) -> None:
    """Relay one body, unchanged, from ``reader`` to ``writer``."""
    if framing.kind == "length":
        await _copy_exactly(framing.length, reader, writer, "the body ended early")
    elif framing.kind == "chunked":
        await _copy_chunked(reader, writer)
    elif framing.kind == "close":
        while data := await reader.read(COPY_BUFFER):
            writer.write(data)
            await writer.drain()


async def _copy_chunked(reader: asyncio.StreamReader, writer: Writer) -> None:
    while True:
        line = await reader.readuntil(b"\r\n")
        writer.write(line)
        size = chunk_size(line)
        if size == 0:
            while True:  # trailer fields, then the final blank line
                trailer = await reader.readuntil(b"\r\n")
                writer.write(trailer)
                if trailer == b"\r\n":
                    await writer.drain()
                    return
        # the chunk and its CRLF
        await _copy_exactly(size + 2, reader, writer, "the body ended inside a chunk")


async def _copy_exactly(
    count: int, reader: asyncio.StreamReader, writer: Writer, short: str
) -> None:
    left = count
    while left:
        data = await reader.read(min(left, COPY_BUFFER))
        if not data:
            raise BadMessage(short)
        writer.write(data)
        left -= len(data)
        await writer.drain()


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end of stream, then half-close the other side."""
    try:
        while data := await reader.read(COPY_BUFFER):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


def answer(
    status: int, reason: str, body: str, extra: list[tuple[str, str]] | None = None
) -> bytes:
    """A short plain-text answer of the proxy's own (an error, 200 for CONNECT)."""
    data = body.encode()
    fields = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(data))),
        *(extra or []),
    ]
    return render(("HTTP/1.1", str(status), reason), fields) + data
