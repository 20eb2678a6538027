"""Keep passwords out of logs, statuses and Events.

A Redis URL, a source URL or a proxy URL may carry ``user:password@``;
wherever such a URL is printed it goes through :func:`url` first. Status
messages go through :func:`one_line` so a multi-line error (an API
response with its headers, a traceback) never lands in ``kubectl get``.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit, urlunsplit

HIDDEN = "***"
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:@/\s]*):[^@/\s]*@")


def url(text: str) -> str:
    """``text`` (a URL) with its password replaced; the user name stays."""
    try:
        parts = urlsplit(text)
    except ValueError:
        return secrets_in(text)
    if parts.password is None:
        return text
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:{HIDDEN}@{netloc}"))


def secrets_in(text: str) -> str:
    """Any ``scheme://user:password@`` inside free text, with the password hidden."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{HIDDEN}@", text)


def one_line(text: str, limit: int = 300) -> str:
    """One readable line, passwords hidden, at most ``limit`` characters."""
    flat = " ".join(secrets_in(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def redis_problem(exc: BaseException) -> str:
    """What a Redis error may say to whoever reads it (a tenant's status, a
    rotator's client, an unauthenticated probe): a refusal's own words
    (NOPERM, OOM, READONLY name no address), but for a connection that
    failed or timed out only that, not the host and port it names."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    if isinstance(exc, RedisTimeoutError | TimeoutError):
        return "timed out"
    if isinstance(exc, RedisConnectionError | OSError):
        return "cannot connect"
    return str(exc) or type(exc).__name__


# "Error 111 connecting to host:6379. Connection refused." and "Error while
# reading from host:6379 : (104, Connection reset by peer)" (redis-py),
# "[Errno 111] Connect call failed ('host', 6379)" (asyncio): Python's errno
# numbers and tuples are noise to whoever reads the message.
_REDIS_CONNECTION = re.compile(
    r"^Error (?:\d+ )?(connecting to|while reading from|while writing to) (\S+?)\.?\s*:?\s+(.*)$"
)
_ERRNO = re.compile(r"\[Errno (\d+)\]|^\((\d+), ")


def connection_problem(exc: BaseException) -> str:
    """A failed connection in words, for someone allowed to know where it
    went (the CLI's user, the operator's log): ``cannot connect to
    host:6379: connection refused``, not errno numbers."""
    text = str(exc) or type(exc).__name__
    found = _REDIS_CONNECTION.match(text)
    where = ""
    if found:
        doing, address, text = found.groups()
        verb = "cannot connect to" if doing == "connecting to" else "lost the connection to"
        where = f"{verb} {address}: "
    number = _ERRNO.search(text)
    if number:
        text = os.strerror(int(number.group(1) or number.group(2)))
    return where + text.rstrip(".").lower() if where else text
