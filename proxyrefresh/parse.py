"""Find candidate proxies in any text: plain lists, HTML tables, JSON.

Proxy lists on the web come in every shape, so parsing is a regex over the
text rather than a grammar. What looks like a proxy but is not valid (a bad
port, a bad address, an unknown scheme) is an error with its line number;
text with nothing proxy-like in it is counted as ignored. Nothing is
dropped without being counted.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from proxyrefresh.models import Protocol, Proxy

DEFAULT_MAX_BYTES = 64 * 1024 * 1024

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
    line: int
    text: str
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}: {self.text[:120]!r}"


@dataclass
class ParseReport:
    """What a list held: unique proxies and a count of everything else."""

    proxies: list[Proxy] = field(default_factory=list)
    duplicates: int = 0
    errors: list[LineError] = field(default_factory=list)
    ignored_lines: int = 0
    comment_lines: int = 0
    blank_lines: int = 0
    lines: int = 0

    def merge(self, other: ParseReport) -> None:
        """Fold another source's report in, de-duplicating across sources."""
        seen = {p.key for p in self.proxies}
        for proxy in other.proxies:
            if proxy.key in seen:
                self.duplicates += 1
            else:
                seen.add(proxy.key)
                self.proxies.append(proxy)
        self.duplicates += other.duplicates
        self.errors.extend(other.errors)
        self.ignored_lines += other.ignored_lines
        self.comment_lines += other.comment_lines
        self.blank_lines += other.blank_lines
        self.lines += other.lines

    def summary(self) -> dict[str, int]:
        return {
            "lines": self.lines,
            "proxies": len(self.proxies),
            "duplicates": self.duplicates,
            "errors": len(self.errors),
            "ignored_lines": self.ignored_lines,
            "comment_lines": self.comment_lines,
            "blank_lines": self.blank_lines,
        }


def _host(raw: str) -> str:
    """Validate and normalise the host part; raise ValueError with a reason."""
    if raw.startswith("["):
        try:
            return str(ipaddress.IPv6Address(raw[1:-1]))
        except ValueError as exc:
            raise ValueError(f"bad IPv6 address {raw}") from exc
    if raw.replace(".", "").isdigit():
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


def parse_lines(lines: Iterable[str], default_protocol: Protocol = Protocol.HTTP) -> ParseReport:
    """Parse a list line by line; every line is accounted for in the report."""
    report = ParseReport()
    seen: set[tuple[str, str, int]] = set()
    for number, line in enumerate(lines, start=1):
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
                report.errors.append(LineError(number, line.strip(), str(exc)))
                continue
            if proxy.key in seen:
                report.duplicates += 1
            else:
                seen.add(proxy.key)
                report.proxies.append(proxy)
        if not found:
            if LOOKS_LIKE_PROXY.search(line):
                report.errors.append(LineError(number, line.strip(), "no host:port found"))
            else:
                report.ignored_lines += 1
    return report


def parse_text(
    text: str,
    default_protocol: Protocol = Protocol.HTTP,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> ParseReport:
    """Parse a whole list held in memory, refusing one over ``max_bytes``."""
    size = len(text.encode("utf-8", errors="replace"))
    check_size(size, max_bytes)
    return parse_lines(text.splitlines(), default_protocol)


def check_size(size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise InputTooLarge(f"candidate list is {size} bytes, over the cap of {max_bytes} bytes")
