"""What a Redis URL names: one server, or a primary that Sentinel manages.

``redis://`` and ``rediss://`` name one server. A primary with replicas
under Sentinel (the common Helm charts' Redis) is named by its sentinels
and its service, ``redis+sentinel://[[user]:password@]host:port[,host:port...]/SERVICE[/DB]``
(the user and password are the primary's; the sentinels' own password is
a setting of its own): every client asks the sentinels where the primary is
and asks again after a failover, so the operator, the workers, the rotator
and the page follow a promotion by themselves. A Redis Cluster is named by
some of its nodes, ``redis+cluster://[[user]:password@]host:port[,host:port...]``:
so far the pool's clients (``Pool``/``AsyncPool``, the ``pool`` commands)
take it; every key of a pool carries one hash tag, so each of its scripts
touches one slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

SENTINEL_SCHEME = "redis+sentinel"
CLUSTER_SCHEME = "redis+cluster"


@dataclass(frozen=True)
class SentinelTarget:
    nodes: list[tuple[str, int]]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None


def is_sentinel(url: str) -> bool:
    return url.startswith(SENTINEL_SCHEME + "://")


@dataclass(frozen=True)
class ClusterTarget:
    nodes: list[tuple[str, int]]
    username: str | None = None
    password: str | None = None


def is_cluster(url: str) -> bool:
    return url.startswith(CLUSTER_SCHEME + "://")


def _nodes(hosts: str, what: str) -> list[tuple[str, int]]:
    nodes = []
    for node in filter(None, hosts.split(",")):
        host, _, port = node.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"a {what} is host:port, not {node!r}")
        nodes.append((host.strip("[]"), int(port)))
    return nodes


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    username, _, password = userinfo.partition(":")
    return unquote(username) or None, unquote(password) if password else None


def _split(
    url: str, scheme: str, what: str, example: str
) -> tuple[str, list[tuple[str, int]], str]:
    """A multi-host URL's path, nodes and user info; ValueError saying what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != scheme:
        raise ValueError(f"not a {scheme}:// URL")
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
    if db and not db.isdigit():
        raise ValueError(f"the database is a number, not {db!r}")
    return SentinelTarget(nodes, unquote(service), int(db or 0), *_credentials(userinfo))


async def replicated(redis: Any, timeout_ms: int = 2000) -> bool | None:
    """Wait until a replica has every write made so far on this connection's
    primary (WAIT), for writes that must outlive a failover (a merged pool);
    None where there is no replica to wait for, False if none acknowledged
    within ``timeout_ms`` (the write stands on the primary alone)."""
    info = await redis.info("replication")
    if not int(info.get("connected_slaves") or 0):
        return None
    return int(await redis.execute_command("WAIT", 1, timeout_ms)) >= 1
