"""A Redis user per run, so a worker's credential opens that run's keys only.

Worker pods run in tenants' namespaces, where anyone with ``view`` reads
their environment and anyone with ``edit`` reads the Secret it comes from.
Handing them the operator's Redis URL would hand out every run, every pool
and whatever else lives in that Redis. So each run gets an ACL user that may
touch the run's own keys by their exact names (never a key of its own
making, so cleanup, which deletes them by name, leaves nothing behind),
publish on the run's channel only, and run the few commands a worker
sends, nothing server-wide (no DBSIZE, no PUBSUB CHANNELS, no SCRIPT
FLUSH). Lua is limited to the run's own scripts, which the operator loads
(EVALSHA only: a script of the worker's making could busy-loop Redis for
everyone). The user is deleted when the run ends: a leaked worker
credential opens nothing else, and nothing at all afterwards.

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

from proxyrefresh.fanout import slots, store
from proxyrefresh.fanout.kind import Kind
from proxyrefresh.fanout.store import RunKeys
from proxyrefresh.redis_topology import CLUSTER_CLIENT_COMMANDS, on_every_node

# Every script a worker runs; the operator loads them (grant), a worker may
# only call them by their SHA.
WORKER_SCRIPTS = (
    store.PROGRESS_SCRIPT,
    store.COMPLETE_SCRIPT,
    store.SAVE_PARTIAL_SCRIPT,
    slots.TAKE_SCRIPT,
    slots.RENEW_SCRIPT,
)
WORKER_SHAS = tuple(hashlib.sha1(script.encode()).hexdigest() for script in WORKER_SCRIPTS)
# What a worker sends (a chunk's HGET, a slot's ZREM, the client's own PING
# and SELECT; its CLIENT SETINFO may fail, redis-py ignores that) and what
# its scripts call: Redis checks each command a script runs against the
# caller's rights too. Any write lets a worker grow its own keys: maxmemory
# bounds that, and cleanup deletes them all by name.
WORKER_COMMANDS = (
    "evalsha",
    "hget",
    "zrem",
    "ping",
    "select",  # a URL's /db: the key patterns bind it in every database
    # inside the scripts
    "exists",
    "get",
    "set",
    "incr",
    "incrby",
    "expire",
    "pexpire",
    "hset",
    "sadd",
    "sismember",
    "zadd",
    "zcard",
    "zscore",
    "zremrangebyscore",
    "time",
    "publish",
    "spublish",  # on a cluster (redis_topology.publish_verb)
)


class AclUnavailable(RuntimeError):
    """The operator's Redis user may not manage ACL users (or Redis is older than 6)."""


def user_name(uid: str, kind: Kind) -> str:
    return f"{kind.user_prefix}{uid}"


def password(key: str, uid: str) -> str:
    """Stable for a run, unguessable without ``key``."""
    return hmac.new(key.encode(), f"worker:{uid}".encode(), hashlib.sha256).hexdigest()


def rules(keys: RunKeys, secret: str) -> list[str]:
    """ACL SETUSER arguments: this run's keys by name, its channel, and the
    worker's commands; nothing else (``reset`` starts from no rights)."""
    return [
        "reset",
        "on",
        f">{secret}",
        *(f"~{key}" for key in keys.all()),
        "resetchannels",
        f"&{keys.events}",
        "-@all",
        *(f"+{command}" for command in WORKER_COMMANDS),
        *CLUSTER_CLIENT_COMMANDS,
    ]


def worker_url(url: str, user: str, secret: str) -> str:
    """The operator's Redis URL with the run's user in place of its own."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{quote(user, safe='')}:{secret}@{host}"))


def run_url(url: str, uid: str, key: str, kind: Kind) -> str:
    """The URL a worker of run ``uid`` connects with."""
    return worker_url(url, user_name(uid, kind), password(key, uid))


async def grant(redis: Redis, uid: str, key: str, kind: Kind) -> None:
    """Create (or re-create) the run's user on every node that may serve its
    keys, and load the scripts it may call (a Redis restarted forgets them;
    a worker may not load its own)."""
    keys = RunKeys(uid, kind.key_prefix)
    try:
        setuser = ["ACL", "SETUSER", user_name(uid, kind), *rules(keys, password(key, uid))]
        await on_every_node(redis, *setuser)
        if not all(await redis.script_exists(*WORKER_SHAS)):  # a Redis restarted or flushed
            for script in WORKER_SCRIPTS:  # on every primary, where a cluster is named
                await redis.script_load(script)
    except ResponseError as exc:
        raise AclUnavailable(
            f"Redis refused ACL SETUSER ({exc}): the controller's Redis user "
            "needs +acl|setuser, +acl|deluser, +script|load and +script|exists"
        ) from None


async def revoke(redis: Redis, uid: str, kind: Kind) -> None:
    """Delete the run's user (on every node); Redis drops its connections
    with it. Idempotent."""
    with contextlib.suppress(ResponseError):  # no ACL support: there was no user
        await on_every_node(redis, "ACL", "DELUSER", user_name(uid, kind))
