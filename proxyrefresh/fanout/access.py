"""A Redis user per run, so a worker's credential opens that run's keys only.

Worker pods run in tenants' namespaces, where anyone with ``view`` reads
their environment and anyone with ``edit`` reads the Secret it comes from.
Handing them the operator's Redis URL would hand out every run, every pool
and whatever else lives in that Redis. So each run gets an ACL user whose
keys and channels are limited to the run's own pattern
(``proxyrefresh:{<uid>}:*``), whose dangerous and admin commands are off,
and which is deleted when the run ends: a leaked worker credential opens
nothing else, and nothing at all afterwards.

The password is an HMAC of the run's id under a key only the operator
holds, so it is never stored and an operator restarted at any point (or a
Redis restarted without its ACLs) recreates exactly the same user:
:func:`grant` is idempotent and is repeated while the run is followed.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
from urllib.parse import quote, urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from proxyrefresh.fanout.store import KEY_PREFIX, PoolKeys, RunKeys

USER_PREFIX = "proxyrefresh-run-"
# Commands a worker never needs; key and channel patterns bound the rest.
DENIED = ("-@dangerous", "-@admin", "-scan", "-randomkey", "-select", "-swapdb")


class AclUnavailable(RuntimeError):
    """The operator's Redis user may not manage ACL users (or Redis is older than 6)."""


def user_name(uid: str) -> str:
    return f"{USER_PREFIX}{uid}"


def password(key: str, uid: str) -> str:
    """Stable for a run, unguessable without ``key``."""
    return hmac.new(key.encode(), f"worker:{uid}".encode(), hashlib.sha256).hexdigest()


def rules(keys: RunKeys | PoolKeys, secret: str) -> list[str]:
    """ACL SETUSER arguments: only this run's (or pool's) keys and channels."""
    pattern = keys.key("*")
    return [
        "reset",
        "on",
        f">{secret}",
        f"~{pattern}",
        "resetchannels",
        f"&{pattern}",
        "+@all",
        *DENIED,
    ]


def worker_url(url: str, user: str, secret: str) -> str:
    """The operator's Redis URL with the run's user in place of its own."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{quote(user, safe='')}:{secret}@{host}"))


def run_url(url: str, uid: str, key: str) -> str:
    """The URL a worker of run ``uid`` connects with."""
    return worker_url(url, user_name(uid), password(key, uid))


async def grant(redis: Redis, uid: str, key: str, prefix: str = KEY_PREFIX) -> None:
    """Create (or re-create) the run's user."""
    keys = RunKeys(uid, prefix)
    try:
        setuser = ["ACL", "SETUSER", user_name(uid), *rules(keys, password(key, uid))]
        await redis.execute_command(*setuser)  # type: ignore[no-untyped-call]
    except ResponseError as exc:
        raise AclUnavailable(
            f"Redis refused ACL SETUSER ({str(exc).split(':')[0]}): the operator's Redis user "
            "needs +acl|setuser and +acl|deluser, or turn per-run users off "
            "(PROXYREFRESH_OPERATOR_WORKER_REDIS_ACL=false)"
        ) from None


async def revoke(redis: Redis, uid: str) -> None:
    """Delete the run's user; Redis drops its connections with it. Idempotent."""
    with contextlib.suppress(ResponseError):  # no ACL support: there was no user
        await redis.acl_deluser(user_name(uid))


def viewer_rules(secret: str, prefix: str = KEY_PREFIX) -> list[str]:
    """ACL SETUSER arguments for a viewer (``proxyrefresh ui``): read the
    pools' keys, subscribe to the runs' and pools' events; no write, no run's
    keys. Redis checks PSUBSCRIBE patterns literally, hence the two given."""
    return [
        "reset",
        "on",
        f">{secret}",
        f"~{prefix}:pool:*",
        "resetchannels",
        f"&{prefix}:{{*}}:events",
        f"&{prefix}:pool:{{*}}:events",
        "+@read",
        "+@pubsub",
        "+eval",  # read-only scripts: every call inside obeys the same rules
        "+evalsha",
        "+script|load",
        "-@dangerous",
    ]
