"""Keep passwords out of logs, statuses and Events.

A Redis URL, a source URL or a proxy URL may carry ``user:password@``;
wherever such a URL is printed it goes through :func:`url` first. Status
messages go through :func:`one_line` so a multi-line error (an API
response with its headers, a traceback) never lands in ``kubectl get``.
"""

from __future__ import annotations

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
