"""A pool's consumer user, kept by the operator (ProxyPool ``spec.access``).

``proxyrefresh pool grant`` makes a user that lives in Redis's memory only:
a Redis restarted without an ACL file forgets it, and a rotator on it
answers 503 until someone grants again, writes a new Secret and restarts
it. A pool with ``spec.access`` gets the same least-privilege user (the
pool's keys and channel, no dangerous or admin command) from the operator,
which looks for it every few seconds and makes it again when Redis forgot
it. Its password derives from the operator's credential key, as a run's
does: the same every time, stored nowhere but in the Secret the operator
writes once into the pool's namespace (owned by the pool, so it goes with
it). The user is deleted with the pool.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from proxyrefresh import constants as c
from proxyrefresh.api import ProxyPoolSpec
from proxyrefresh.fanout.access import AclUnavailable, worker_url
from proxyrefresh.operator import kube
from proxyrefresh.pool_keys import PoolKeys, pool_rules

ACCESS_INTERVAL = 5.0  # seconds between looks for the user (a Redis restart)


def user_name(namespace: str, name: str) -> str:
    """As ``ACL LIST`` shows it: whose it is, at a glance."""
    return f"proxyrefresh-pool:{namespace}/{name}"


def password(key: str, namespace: str, name: str) -> str:
    """Stable for a pool, unguessable without ``key``."""
    message = f"pool:{namespace}/{name}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def secret_manifest(body: dict[str, Any], secret_name: str, url: str) -> dict[str, Any]:
    meta = body["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": secret_name,
            "namespace": meta["namespace"],
            "labels": {c.LABEL_POOL: meta["name"], c.LABEL_MANAGED_BY: c.MANAGED_BY},
            "ownerReferences": [
                {
                    "apiVersion": c.API_VERSION,
                    "kind": c.POOL_KIND,
                    "name": meta["name"],
                    "uid": meta["uid"],
                }
            ],
        },
        "type": "Opaque",
        "stringData": {"url": url},
    }


async def keep(
    redis: Redis,
    body: dict[str, Any],
    spec: ProxyPoolSpec,
    key: str,
    redis_url: str,
    secret_too: bool,
) -> bool:
    """Make the pool's user if Redis does not have it, and (``secret_too``,
    or the user was made) its Secret if missing; True if the user was made.
    AclUnavailable if Redis refused."""
    if spec.access is None:
        return False
    meta = body["metadata"]
    user = user_name(meta["namespace"], meta["name"])
    secret = password(key, meta["namespace"], meta["name"])
    made = False
    try:
        if await redis.execute_command("ACL", "GETUSER", user) is None:  # type: ignore[no-untyped-call]
            rules = pool_rules(PoolKeys(meta["namespace"], meta["name"]), secret)
            await redis.execute_command("ACL", "SETUSER", user, *rules)  # type: ignore[no-untyped-call]
            made = True
    except ResponseError as exc:
        raise AclUnavailable(
            f"Redis refused the pool's user ({exc}): the operator's Redis user needs "
            "+acl|getuser, +acl|setuser and +acl|deluser"
        ) from None
    if made or secret_too:
        url = worker_url(redis_url, user, secret)
        await kube.create_secret(secret_manifest(body, spec.access.secret_name, url))
    return made


async def revoke(redis: Redis, namespace: str, name: str) -> None:
    """Delete the pool's user (a pool without access has none: nothing happens)."""
    await redis.execute_command("ACL", "DELUSER", user_name(namespace, name))  # type: ignore[no-untyped-call]
