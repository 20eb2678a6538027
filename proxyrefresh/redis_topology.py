"""What a Redis URL names: one server, a primary that Sentinel manages, or a cluster.

``redis://`` and ``rediss://`` name one server. A primary with replicas
under Sentinel (the common Helm charts' Redis) is named by its sentinels
and its service, ``redis+sentinel://[[user]:password@]host:port[,host:port...]/SERVICE[/DB]``
(the user and password are the primary's; the sentinels' own password is
a setting of its own): every client asks the sentinels where the primary is
and asks again after a failover, so the operator, the workers, the rotator
and the page follow a promotion by themselves. A Redis Cluster is named by
some of its nodes, ``redis+cluster://[[user]:password@]host:port[,host:port...]``:
every client takes it. Every key of a run and of a pool carries its hash
tag, so each script touches one slot; node-local state (the ACL users)
goes to every node (:func:`on_every_node`), and events go over sharded
pub/sub (:func:`publish_verb`). Each form has its TLS twin, with an ``s``:
``rediss+sentinel://``, ``rediss+cluster://``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

SENTINEL_SCHEME = "redis+sentinel"
CLUSTER_SCHEME = "redis+cluster"
# Each with TLS too: ``rediss+sentinel://`` (the sentinels and the primary
# on TLS) and ``rediss+cluster://`` (every node on TLS), as rediss:// is
# redis:// on TLS.
TLS_SCHEMES = ("rediss", "rediss+sentinel", "rediss+cluster")


def scheme(url: str) -> str:
    return url.partition("://")[0].lower()


def uses_tls(url: str) -> bool:
    return scheme(url) in TLS_SCHEMES


@dataclass(frozen=True)
class SentinelTarget:
    nodes: list[tuple[str, int]]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None


def is_sentinel(url: str) -> bool:
    return scheme(url).replace("rediss+", "redis+") == SENTINEL_SCHEME


@dataclass(frozen=True)
class ClusterTarget:
    nodes: list[tuple[str, int]]
    username: str | None = None
    password: str | None = None


def is_cluster(url: str) -> bool:
    return scheme(url).replace("rediss+", "redis+") == CLUSTER_SCHEME


def _nodes(hosts: str, what: str) -> list[tuple[str, int]]:
    nodes = []
    for node in filter(None, hosts.split(",")):
        host, _, port = node.rpartition(":")
        if not host or not (port.isascii() and port.isdecimal()) or not 0 < int(port) < 65536:
            raise ValueError(f"a {what} is host:port, not {node!r}")
        nodes.append((host.strip("[]"), int(port)))
    return nodes


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    username, _, password = userinfo.partition(":")
    return unquote(username) or None, unquote(password) if password else None


def _split(url: str, kind: str, what: str, example: str) -> tuple[str, list[tuple[str, int]], str]:
    """A multi-host URL's path, nodes and user info; ValueError saying what is wrong."""
    parts = urlsplit(url)
    if parts.scheme.replace("rediss+", "redis+") != kind:
        raise ValueError(f"not a {kind}:// URL")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    nodes = _nodes(hosts, what)
    if not nodes:
        raise ValueError(f"name at least one {what}: {example}")
    return parts.path, nodes, userinfo


def cluster_target(url: str) -> ClusterTarget:
    """The seed nodes of a ``redis+cluster://`` URL; ValueError saying what is wrong."""
    example = "redis+cluster://host:port[,host:port...]"
    path, nodes, userinfo = _split(url, CLUSTER_SCHEME, "cluster node", example)
    if path.strip("/") not in ("", "0"):
        raise ValueError("a Redis Cluster has database 0 only")
    return ClusterTarget(nodes, *_credentials(userinfo))


def sentinel_target(url: str) -> SentinelTarget:
    """The sentinels, service and database a ``redis+sentinel://`` URL
    names; ValueError saying what is wrong with it."""
    example = "redis+sentinel://host:port/SERVICE"
    path, nodes, userinfo = _split(url, SENTINEL_SCHEME, "sentinel", example)
    service, _, db = path.strip("/").partition("/")
    if not service:
        raise ValueError("name the service after the sentinels: redis+sentinel://host:port/SERVICE")
    if db and not (db.isascii() and db.isdecimal()):
        raise ValueError(f"the database is a number, not {db!r}")
    return SentinelTarget(nodes, unquote(service), int(db or 0), *_credentials(userinfo))


# What a cluster client sends besides its keys' commands: its map of the
# slots (CLUSTER SLOTS), the command table that says where a command's keys
# are (COMMAND), and ASKING on a slot that is moving. Every user the product
# makes gets them: they read no key, and on one server they are harmless.
CLUSTER_CLIENT_COMMANDS = ("+cluster|slots", "+cluster|shards", "+command", "+asking")


def is_cluster_client(redis: Any) -> bool:
    """A Redis Cluster client (redis-py's, either kind), not one server's."""
    return hasattr(redis, "get_nodes") and hasattr(redis, "nodes_manager")


def publish_verb(redis: Any) -> str:
    """How events are published: SPUBLISH on a cluster (sharded pub/sub,
    Redis 7: a message goes to the nodes of its channel's slot, not to every
    node as PUBLISH's does), PUBLISH on one server. Every publisher and
    subscriber of the product decides by this, so they always meet."""
    return "SPUBLISH" if is_cluster_client(redis) else "PUBLISH"


async def on_every_node(redis: Any, *command: Any, primaries: bool = False) -> list[Any]:
    """``command`` on each node of a cluster (the replicas too, unless
    ``primaries``: one may be promoted), or on the one server; the replies
    of the nodes that answered. Node-local state is what needs this: an ACL
    user exists only on the nodes it was made on, as Redis does not spread
    ACL changes. A node that is down is skipped: it gets the command on the
    next call after it is back (callers repeat, as they do after a
    restart). ConnectionError when no node answered."""
    if not is_cluster_client(redis):
        return [await redis.execute_command(*command)]
    await redis.ping()  # a new client learns the nodes with its first command
    nodes = redis.get_primaries() if primaries else redis.get_nodes()
    replies, down = [], []
    for node in nodes:
        try:
            replies.append(await redis.execute_command(*command, target_nodes=node))
        except (ConnectionError, TimeoutError, RedisConnectionError, RedisTimeoutError) as exc:
            down.append(f"{node.name}: {exc}")
    if not replies:
        raise RedisConnectionError(f"no Redis Cluster node answered ({'; '.join(down)})")
    return replies


async def replicated(redis: Any, timeout_ms: int = 2000) -> bool | None:
    """Wait until a replica has every write made so far on this connection's
    primary (WAIT), for writes that must outlive a failover (a merged pool);
    None where there is no replica to wait for, False if none acknowledged
    within ``timeout_ms`` (the write stands on the primary alone). None on a
    cluster too: WAIT counts one connection's writes, and a cluster client
    cannot send it on the connection that made them (documented limit)."""
    if is_cluster_client(redis):
        return None
    info = await redis.info("replication")
    if not int(info.get("connected_slaves") or 0):
        return None
    return int(await redis.execute_command("WAIT", 1, timeout_ms)) >= 1
