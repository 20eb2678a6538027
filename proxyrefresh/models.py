"""Typed models shared by the control plane and the data plane.

A proxy travels as a :class:`Proxy` from the parser to the checker and comes
back as a :class:`ProxyResult`; both serialise to plain JSON so the same
objects go through Redis, the output ConfigMap and ``proxyrefresh check``.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from pydantic.dataclasses import dataclass


class Protocol(StrEnum):
    """How the checker talks to a proxy."""

    HTTP = "http"  # plain forwarding: GET http://judge/ via the proxy
    HTTPS = "https"  # a CONNECT tunnel
    SOCKS4 = "socks4"
    SOCKS5 = "socks5"

    @property
    def is_tunnel(self) -> bool:
        """A tunnel cannot add headers: only its exit IP can betray us."""
        return self is not Protocol.HTTP


class Anonymity(StrEnum):
    """What a proxy reveals, from worst to best; the order is the ranking."""

    TRANSPARENT = "transparent"
    ANONYMOUS = "anonymous"
    ELITE = "elite"

    @property
    def rank(self) -> int:
        return _ANONYMITY_ORDER.index(self)

    def at_least(self, other: Anonymity) -> bool:
        return self.rank >= other.rank


_ANONYMITY_ORDER = [Anonymity.TRANSPARENT, Anonymity.ANONYMOUS, Anonymity.ELITE]

Port = Annotated[int, Field(ge=1, le=65535)]


@dataclass(frozen=True, slots=True)
class Proxy:
    """One candidate proxy, as parsed from a list.

    A slotted (pydantic) dataclass, not a model: a check holds every
    candidate at once, and 100,000 of them take 17 MiB this way against 104
    MiB as models (the operator holds its candidates as URLs, see
    :class:`proxyrefresh.parse.Candidates`)."""

    protocol: Protocol
    host: str
    port: Port
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_item(cls, item: object) -> Proxy:
        """A chunk's item (what :meth:`to_item` made); ValidationError if it is not one."""
        return _PROXY.validate_python(item)

    @classmethod
    def from_url(cls, url: str) -> Proxy:
        """The proxy whose :attr:`url` this is (that form exactly, not any
        list's: the parser reads those). A user name has no ``:`` or ``@``
        and a password no ``@``, as the parser takes them, so the split is
        unambiguous; ValidationError or ValueError if it is not such a URL."""
        scheme, _, rest = url.partition("://")
        auth, at, hostport = rest.rpartition("@")
        host, _, port = hostport.rpartition(":")
        if host.startswith("["):
            host = host[1:-1]
        username, _, password = auth.partition(":")
        return cls(
            protocol=Protocol(scheme),
            host=host,
            port=int(port),
            username=username if at else None,
            password=password if at else None,
        )

    def to_item(self) -> dict[str, str | int | None]:
        """The JSON a chunk carries for it."""
        return {
            "protocol": self.protocol.value,
            "host": self.host,
            "port": self.port,
            "username": self.username,
            "password": self.password,
        }

    @property
    def key(self) -> tuple[str, str | None, str, int]:
        """Identity for de-duplication: scheme, user name, host and port.
        Commercial gateways pick the exit (country, sticky session) by the
        user name on one host:port, so each user name is a proxy of its own;
        the password is not identity (a list may repeat it changed)."""
        return (self.protocol.value, self.username, self.host.lower(), self.port)

    @property
    def hostport(self) -> str:
        # Only an IPv6 literal has a colon in it (a host name or IPv4 cannot).
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        """``scheme://[user:pass@]host:port``: what mubeng and clients read."""
        auth = ""
        if self.username is not None:
            auth = f"{self.username}:{self.password or ''}@"
        return f"{self.protocol.value}://{auth}{self.hostport}"

    def __str__(self) -> str:
        return self.url


_PROXY = TypeAdapter(Proxy)


class TargetSpec(BaseModel):
    """An extra URL a usable proxy must reach, with the status it must get."""

    url: str
    expect_status: int = Field(default=200, alias="expectStatus")

    model_config = ConfigDict(populate_by_name=True, frozen=True)


class TargetResult(BaseModel):
    url: str
    ok: bool
    status: int | None = None
    latency_ms: float | None = None
    error: str | None = None


class ProxyResult(BaseModel):
    """Everything one check learned about one proxy."""

    proxy: str  # scheme://host:port, the identity users see
    protocol: Protocol
    host: str
    port: int
    alive: bool
    exit_ip: str | None = None
    latency_ms: float | None = None
    anonymity: Anonymity | None = None
    judge: str | None = None
    revealing_headers: list[str] = Field(default_factory=list)
    targets: list[TargetResult] = Field(default_factory=list)
    error: str | None = None
    checked_at: float

    @property
    def targets_ok(self) -> bool:
        return all(t.ok for t in self.targets)

    def passes(self, min_anonymity: Anonymity, max_latency_ms: float | None = None) -> bool:
        """Usable: alive, anonymous enough, fast enough, every target reached."""
        if not self.alive or self.anonymity is None:
            return False
        if not self.anonymity.at_least(min_anonymity):
            return False
        if max_latency_ms is not None and (self.latency_ms or 0) > max_latency_ms:
            return False
        return self.targets_ok


@dataclasses.dataclass
class Tally:
    """What a set of checks found: ``proxyrefresh check``'s summary and a
    refresh's status count alike (worker/check_command.py, operator/merge.py)."""

    checked: int = 0
    live: int = 0
    passed: int = 0  # live and passing the filter: a refresh's "usable"
    unchecked: int = 0  # left pending (a chunk stopped at its deadline)
    anonymity: Counter[str] = dataclasses.field(default_factory=Counter)
    failures: Counter[str] = dataclasses.field(default_factory=Counter)  # by error kind

    def add(self, result: ProxyResult, passed: bool) -> None:
        self.checked += 1
        if result.alive:
            self.live += 1
            self.anonymity[str(result.anonymity)] += 1
        elif result.error:
            self.failures[result.error.split(":")[0]] += 1
        self.passed += passed
