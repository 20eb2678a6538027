"""Redis users the operator keeps, and makes again when Redis forgot them.

A user made with ``ACL SETUSER`` lives in Redis's memory only: a Redis
restarted without an ACL file (the common case) forgets it, and whatever
connects with it (a rotator, the live page) fails on every command until
someone grants again, writes a new Secret and restarts it. The operator
keeps such users instead: it looks for each every few seconds and makes it
again when it is gone. A kept user's password derives from the operator's
credential key and what the user is for, as a run's does (fanout.access):
the same every time, stored nowhere but in the Secret the operator writes
once for its consumers. Kept so far: a pool's consumer (pool_access.py) and
the live page's viewer (viewer_access.py).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from proxyrefresh.fanout.access import AclUnavailable, worker_url
from proxyrefresh.redis_topology import on_every_node

INTERVAL = 5.0  # seconds between looks for a kept user (a Redis restart)


@dataclass(frozen=True)
class KeptUser:
    name: str  # as ``ACL LIST`` shows it: whose it is, at a glance
    purpose: str  # what its password derives from, besides the key
    rules: Callable[[str], list[str]]  # ACL SETUSER arguments, given its password

    def password(self, key: str) -> str:
        """Stable for a user, unguessable without ``key``."""
        return hmac.new(key.encode(), self.purpose.encode(), hashlib.sha256).hexdigest()

    def url(self, redis_url: str, key: str) -> str:
        """``redis_url`` (the operator's) with this user in place of its own."""
        return worker_url(redis_url, self.name, self.password(key))

    async def keep(self, redis: Redis, key: str) -> bool:
        """Make the user on every node that lacks it (each node of a cluster
        keeps its own users); True if it was made anywhere. AclUnavailable
        if Redis refused."""
        try:
            seen = await on_every_node(redis, "ACL", "GETUSER", self.name)
            if all(user is not None for user in seen):
                return False
            await on_every_node(redis, "ACL", "SETUSER", self.name, *self.rules(self.password(key)))
        except ResponseError as exc:
            raise AclUnavailable(
                f"Redis refused user {self.name} ({exc}): the operator's Redis user needs "
                "+acl|getuser, +acl|setuser and +acl|deluser"
            ) from None
        return True

    async def delete(self, redis: Redis) -> None:
        await on_every_node(redis, "ACL", "DELUSER", self.name)
