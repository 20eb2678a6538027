"""Find candidate proxies in any text: plain lists, HTML tables, JSON.

Proxy lists on the web come in every shape, so parsing is a regex over the
text rather than a grammar. What looks like a proxy but is not valid (a bad
port, a bad address, an unknown scheme) is an error with its line number;
text with nothing proxy-like in it is counted as ignored. Nothing is
dropped without being counted.

A text that is a JSON document is read by its structure first: a list of
strings, objects with proxy/ip/host/port/protocol fields, or objects keyed
by protocol (``{"socks5": ["1.2.3.4:1080"]}``, whose entries take the key's
protocol). Read line by line, such a document's ``"ip": "1.2.3.4",`` lines
would look like proxies without ports: spurious errors in a clean file.
"""

from __future__ import annotations

import codecs
import ipaddress
import itertools
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import overload

from proxyrefresh import redact
from proxyrefresh.models import Protocol, Proxy

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
# Errors kept with their line (the rest only counted): a list of a million
# bad lines held a million errors, 400 MB, to report one and a count.
KEPT_ERRORS = 1000

SCHEMES: dict[str, Protocol] = {
    "http": Protocol.HTTP,
    "https": Protocol.HTTPS,
    "connect": Protocol.HTTPS,
    "socks4": Protocol.SOCKS4,
    "socks4a": Protocol.SOCKS4,
    "socks5": Protocol.SOCKS5,
    "socks5h": Protocol.SOCKS5,
    "socks": Protocol.SOCKS5,
}

_HOST = r"""
    (?P<host>
        \[[0-9A-Fa-f:.]+\]                          # [IPv6]
      | \d{1,3}(?:\.\d{1,3}){3}                     # IPv4, octets checked later
      | (?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}  # hostname
      | localhost
    )
"""
# Between host and port: a colon (host:port), blanks ("1.2.3.4 8080"), HTML
# cells ("1.2.3.4</td><td>8080") or a JSON port key ('"1.2.3.4", "port": 80').
_GAP = r"""
    (?: [ \t]*:[ \t]*
      | [ \t]+
      | (?:\s*<[^<>]{0,80}>\s*){1,6}
      | ["']?\s*,\s*["']?port["']?\s*:\s*["']?
    )
"""
CANDIDATE = re.compile(
    r"(?<![\w.:/@-])"
    r"(?:(?P<scheme>[A-Za-z][A-Za-z0-9+.-]{1,15})://)?"
    r"(?:(?P<user>[^\s:@/<>\"']+):(?P<password>[^\s@/<>\"']*)@)?"
    + _HOST
    + _GAP
    + r"(?P<port>\d{1,6})(?![\d.])",
    re.VERBOSE,
)
# Something a person meant as a proxy but that CANDIDATE did not accept.
LOOKS_LIKE_PROXY = re.compile(
    r"[A-Za-z][A-Za-z0-9+.-]*://\S+"
    r"|(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?![\w.])"
    r"|\[[^\]\s]*:[^\]\s]*\]:\d+"
)
COMMENT = re.compile(r"^\s*(?:#|//|;)")


class InputTooLarge(ValueError):
    """The list is bigger than the configured cap."""


@dataclass(frozen=True)
class LineError:
    line: int  # the line, or for a JSON document the entry, counted from 1
    text: str
    reason: str
    kind: str = "line"

    @property
    def where(self) -> str:
        return f"{self.kind} {self.line}"

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}: {redact.secrets_in(self.text[:120])!r}"


class Candidates(Sequence[Proxy]):
    """Unique proxies in the order first met, held as their URLs.

    The operator holds every candidate of a refresh until its chunks are
    written. As Proxy objects, with a set of their key tuples beside, that
    was about 280 bytes a candidate (100,000: 27 MiB at the parse's peak);
    as URL strings, with a set of the same strings for identity, about 120.
    A proxy is made again from its URL when it is read."""

    def __init__(self, keep_proxies: bool = False) -> None:
        self._urls: list[str] = []
        self._keys: set[str] = set()
        # The proxies themselves too, for a piece that is handed on at once
        # (operator/list_reader.py): not made again from their URLs there.
        self._proxies: list[Proxy] | None = [] if keep_proxies else None

    def add(self, proxy: Proxy) -> bool:
        """Add ``proxy`` unless one of its identity is here; True if added."""
        url = proxy.url
        # Most proxies have no user name, and their URL is their identity:
        # the set then holds the very string the list does.
        plain = proxy.username is None and proxy.host == proxy.host.lower()
        return self._add(url, url if plain else repr(proxy.key), proxy)

    def entries(self) -> Iterator[tuple[str, Proxy]]:
        """(identity, proxy) of each: what a store de-duplicates them by."""
        proxies = self._proxies if self._proxies is not None else map(Proxy.from_url, self._urls)
        for url, proxy in zip(self._urls, proxies, strict=True):
            yield (url if url in self._keys else repr(proxy.key)), proxy

    def _add(self, url: str, key: str, proxy: Proxy | None = None) -> bool:
        if key in self._keys:
            return False
        self._keys.add(key)
        self._urls.append(url)
        if self._proxies is not None:
            self._proxies.append(proxy or Proxy.from_url(url))
        return True

    def extend(self, other: Candidates) -> int:
        """Add ``other``'s proxies; returns how many of them were here already."""
        before = len(self._urls)
        for url in other._urls:
            key = url if url in other._keys else repr(Proxy.from_url(url).key)
            self._add(url, key)
        return len(other._urls) - (len(self._urls) - before)

    def __len__(self) -> int:
        return len(self._urls)

    @overload
    def __getitem__(self, index: int) -> Proxy: ...
    @overload
    def __getitem__(self, index: slice) -> list[Proxy]: ...
    def __getitem__(self, index: int | slice) -> Proxy | list[Proxy]:
        if isinstance(index, slice):
            return [Proxy.from_url(url) for url in self._urls[index]]
        return Proxy.from_url(self._urls[index])


@dataclass
class ParseReport:
    """What a list held: unique proxies and a count of everything else."""

    candidates: Candidates = field(default_factory=Candidates)
    duplicates: int = 0
    errors: list[LineError] = field(default_factory=list)  # the first KEPT_ERRORS
    error_count: int = 0  # all of them
    ignored_lines: int = 0
    comment_lines: int = 0
    blank_lines: int = 0
    lines: int = 0

    @property
    def proxies(self) -> list[Proxy]:
        """The unique proxies, made from the candidates (a copy)."""
        return list(self.candidates)

    def keep(self, proxy: Proxy) -> None:
        """Add ``proxy`` unless one of its identity was seen: then count it."""
        if not self.candidates.add(proxy):
            self.duplicates += 1

    def error(self, error: LineError) -> None:
        self.error_count += 1
        if len(self.errors) < KEPT_ERRORS:
            self.errors.append(error)

    def merge(self, other: ParseReport) -> None:
        """Fold another source's report in (``other`` is consumed),
        de-duplicating across sources. Into an empty report its candidates
        go as they are: they are unique already, and are not copied."""
        if not self.candidates:
            self.candidates, other.candidates = other.candidates, Candidates()
        else:
            self.duplicates += self.candidates.extend(other.candidates)
        self.duplicates += other.duplicates
        self.errors.extend(other.errors[: max(0, KEPT_ERRORS - len(self.errors))])
        self.error_count += other.error_count
        self.ignored_lines += other.ignored_lines
        self.comment_lines += other.comment_lines
        self.blank_lines += other.blank_lines
        self.lines += other.lines

    def summary(self) -> dict[str, int]:
        return {
            "lines": self.lines,
            "proxies": len(self.candidates),
            "duplicates": self.duplicates,
            "errors": self.error_count,
            "ignored_lines": self.ignored_lines,
            "comment_lines": self.comment_lines,
            "blank_lines": self.blank_lines,
        }


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
CANONICAL_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}", re.ASCII)


def _canonical_ipv4(text: str) -> bool:
    """Four decimal octets, 0-255, without leading zeros: as ipaddress writes them."""
    return CANONICAL_IPV4.fullmatch(text) is not None


def _host(raw: str) -> str:
    """Validate and normalise the host part; raise ValueError with a reason."""
    if raw.startswith("["):
        try:
            return str(ipaddress.IPv6Address(raw[1:-1]))
        except ValueError as exc:
            raise ValueError(f"bad IPv6 address {raw}") from exc
    if raw.replace(".", "").isdigit():
        if _canonical_ipv4(raw):  # the common case, without ipaddress's cost
            return raw
        try:
            return str(ipaddress.IPv4Address(raw))
        except ValueError as exc:
            raise ValueError(f"bad IPv4 address {raw}") from exc
    return raw.lower()


def _proxy(match: re.Match[str], default: Protocol) -> Proxy:
    scheme = match.group("scheme")
    protocol = default
    if scheme is not None:
        try:
            protocol = SCHEMES[scheme.lower()]
        except KeyError:
            raise ValueError(f"unsupported scheme {scheme!r}") from None
    port = int(match.group("port"))
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} out of range 1-65535")
    return Proxy(
        protocol=protocol,
        host=_host(match.group("host")),
        port=port,
        username=match.group("user"),
        password=match.group("password"),
    )


def parse_lines(
    lines: Iterable[str],
    default_protocol: Protocol = Protocol.HTTP,
    first_line: int = 1,
    keep_proxies: bool = False,
) -> ParseReport:
    """Parse a list line by line; every line is accounted for in the report
    (errors name lines counting from ``first_line``)."""
    report = ParseReport(candidates=Candidates(keep_proxies))
    for number, line in enumerate(lines, start=first_line):
        report.lines += 1
        if not line.strip():
            report.blank_lines += 1
            continue
        if COMMENT.match(line):
            report.comment_lines += 1
            continue
        found = False
        for match in CANDIDATE.finditer(line):
            found = True
            try:
                proxy = _proxy(match, default_protocol)
            except ValueError as exc:
                report.error(LineError(number, line.strip(), str(exc)))
                continue
            report.keep(proxy)
        if not found:
            if LOOKS_LIKE_PROXY.search(line):
                report.error(LineError(number, line.strip(), "no host:port found"))
            else:
                report.ignored_lines += 1
    return report


def parse_text(
    text: str,
    default_protocol: Protocol = Protocol.HTTP,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> ParseReport:
    """Parse a whole list held in memory, refusing one over ``max_bytes``."""
    report = ParseReport()
    for piece in parse_pieces(text, default_protocol, max_bytes):
        report.merge(piece)
    return report


# About 25 ms of parsing: a task woken by a timer or a reply needs two or
# three turns of the loop, so it waits that many pieces (10,000-line pieces
# kept one waiting 0.3-0.5 s).
PIECE_LINES = 2_000


def parse_pieces(
    text: str,
    default_protocol: Protocol = Protocol.HTTP,
    max_bytes: int = DEFAULT_MAX_BYTES,
    lines_per_piece: int = PIECE_LINES,
) -> Iterator[ParseReport]:
    """:func:`parse_text`'s reports a piece of the list at a time, to fold
    with :meth:`ParseReport.merge`: a caller on an event loop gives it back
    between pieces (100,000 lines are about a second of parsing). A JSON
    document is one piece."""
    size = len(text.encode("utf-8", errors="replace"))
    check_size(size, max_bytes)
    if text.lstrip()[:1] in ("[", "{"):
        try:
            document = json.loads(text)
        except ValueError:
            pass  # not JSON after all: scan it as text
        else:
            report = parse_json(document, default_protocol)
            report.lines = sum(1 for _ in lines_of(text))
            yield report
            return
    lines = lines_of(text)
    first = 1
    while piece := list(itertools.islice(lines, lines_per_piece)):
        yield parse_lines(piece, default_protocol, first)
        first += len(piece)


# What str.splitlines splits on.
LINE_BREAK = re.compile(r"\r\n|[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def lines_of(text: str) -> Iterator[str]:
    """``text.splitlines()``, one line at a time: a list of 100,000 lines
    is 7 MiB held beside the proxies parsed from it."""
    start = 0
    for match in LINE_BREAK.finditer(text):
        yield text[start : match.start()]
        start = match.end()
    if start < len(text):
        yield text[start:]


class LineSplitter:
    """A text that arrives in pieces (a download), cut into whole lines as
    :func:`lines_of` cuts it: a line split between two pieces is kept until
    its end comes, and so is a CR that may be the first half of a CRLF."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._tail = ""

    def feed(self, data: bytes) -> list[str]:
        """The lines that ``data`` completes."""
        text = self._tail + self._decoder.decode(data)
        lines: list[str] = []
        start = 0
        for match in LINE_BREAK.finditer(text):
            if match.end() == len(text) and match.group() == "\r":
                break  # a CRLF, maybe, whose LF is still to come
            lines.append(text[start : match.start()])
            start = match.end()
        self._tail = text[start:]
        return lines

    def end(self) -> list[str]:
        """The last line, when the text did not end with a line break."""
        text = self._tail + self._decoder.decode(b"", final=True)
        self._tail = ""
        return list(lines_of(text))


ADDRESS_FIELDS = ("ip", "host", "addr", "address", "ip_address", "server")
PROTOCOL_FIELDS = ("protocol", "type", "scheme", "protocols", "types")


def _entry_text(entry: dict[str, object], protocol: Protocol) -> tuple[str, Protocol] | None:
    """An object's proxy as text to parse, and its protocol; None if it has none."""
    for key in PROTOCOL_FIELDS:
        value = entry.get(key)
        if isinstance(value, list) and value:
            value = value[0]  # "protocols": ["socks4", "socks5"]: the first one
        if isinstance(value, str) and value.lower() in SCHEMES:
            protocol = SCHEMES[value.lower()]
            break
    proxy = entry.get("proxy") or entry.get("url")
    if isinstance(proxy, str):
        return proxy, protocol
    host = next((entry[k] for k in ADDRESS_FIELDS if isinstance(entry.get(k), str)), None)
    port = entry.get("port")
    if isinstance(host, str) and isinstance(port, int | str) and not isinstance(port, bool):
        return f"{host}:{port}", protocol
    return None


def parse_json(document: object, default_protocol: Protocol = Protocol.HTTP) -> ParseReport:
    """Every proxy in a JSON document, found by its structure."""
    report = ParseReport()
    entries = 0

    def take(text: str, protocol: Protocol) -> None:
        nonlocal entries
        entries += 1
        found = parse_lines([text], protocol)
        for error in found.errors:
            report.error(LineError(entries, text, error.reason, "entry"))
        report.duplicates += report.candidates.extend(found.candidates)
        report.ignored_lines += found.ignored_lines

    def walk(node: object, protocol: Protocol) -> None:
        if isinstance(node, str):
            take(node, protocol)
        elif isinstance(node, list):
            for item in node:
                walk(item, protocol)
        elif isinstance(node, dict):
            entry = _entry_text(node, protocol)
            if entry is not None:
                take(*entry)
                return
            for key, value in node.items():
                keyed = SCHEMES.get(str(key).lower())
                # A string field is a proxy only under a protocol's key.
                if isinstance(value, list | dict) or (isinstance(value, str) and keyed):
                    walk(value, keyed or protocol)

    walk(document, default_protocol)
    return report


def check_size(size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise InputTooLarge(f"candidate list is {size} bytes, over the cap of {max_bytes} bytes")
