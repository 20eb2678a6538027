"""What a kind of run calls its things in Redis: each kind its own names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from proxyrefresh.fanout.store import RunKeys, RunStore


@dataclass(frozen=True)
class Kind:
    """A kind of run's names: its runs' keys are ``<key_prefix>:{<uid>}:*``
    and each run's Redis user is ``<user_prefix><uid>``. Two kinds sharing
    one Redis never touch each other's runs, nor hand out each other's users."""

    key_prefix: str
    user_prefix: str

    def keys(self, uid: str) -> RunKeys:
        """The names of run ``uid``'s keys."""
        from proxyrefresh.fanout.store import RunKeys

        return RunKeys(uid, self.key_prefix)

    def store(self, redis: Redis, uid: str, ttl: int | None = None) -> RunStore:
        """Run ``uid``'s keys in ``redis`` (with ``ttl``, else the default)."""
        from proxyrefresh.fanout.store import DEFAULT_TTL_SECONDS, RunStore

        return RunStore(
            redis, uid, DEFAULT_TTL_SECONDS if ttl is None else ttl, prefix=self.key_prefix
        )
