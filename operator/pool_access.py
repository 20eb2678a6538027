"""A pool's consumer user, kept by the operator (ProxyPool ``spec.access``).

The same least-privilege user ``proxyrefresh pool grant`` makes (the pool's
keys and channel, no dangerous or admin command), kept by the operator
(kept_users.py): made again within seconds whenever Redis forgot it, its
URL written once into a Secret of the pool's namespace, owned by the pool
so it goes with it. The user is deleted with the pool.
"""

from __future__ import annotations

import functools
from typing import Any

from redis.asyncio import Redis

from proxyrefresh import constants as c
from proxyrefresh.api import ProxyPoolSpec
from proxyrefresh.operator import kube
from proxyrefresh.operator.kept_users import INTERVAL, KeptUser
from proxyrefresh.pool_keys import PoolKeys, pool_rules

ACCESS_INTERVAL = INTERVAL


def user(namespace: str, name: str) -> KeptUser:
    rules = functools.partial(pool_rules, PoolKeys(namespace, name))
    return KeptUser(f"proxyrefresh-pool:{namespace}/{name}", f"pool:{namespace}/{name}", rules)


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
    kept = user(meta["namespace"], meta["name"])
    made = await kept.keep(redis, key)
    if made or secret_too:
        manifest = secret_manifest(body, spec.access.secret_name, kept.url(redis_url, key))
        await kube.create_secret(manifest)
    return made


async def revoke(redis: Redis, namespace: str, name: str) -> None:
    """Delete the pool's user (a pool without access has none: nothing happens)."""
    await user(namespace, name).delete(redis)
