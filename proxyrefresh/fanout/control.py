"""The control side of one run, for any kind: what its controller calls.

Step by step a controller writes the run's chunks (``store``), gives its
workers a Redis user of their own (:meth:`Run.grant`, repeated while it
follows the run, so a Redis restarted without its ACLs lets them back in),
follows the run (:meth:`Run.follow`: the progress, every key kept alive
another TTL, :class:`~proxyrefresh.fanout.store.StateLost` once the keys
are gone), and, when the run ends, takes the user away (:meth:`Run.revoke`)
or everything (:meth:`Run.cleanup`). Kubernetes is the controller's
business: fanout.job builds the Job and the Secret, the controller sends them.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from proxyrefresh.fanout import access
from proxyrefresh.fanout.kind import Kind
from proxyrefresh.fanout.store import DEFAULT_TTL_SECONDS, Progress, RunStore


@dataclass
class Run:
    """One run of a kind, as its controller sees it."""

    redis: Redis
    kind: Kind
    uid: str
    ttl: int = DEFAULT_TTL_SECONDS

    @property
    def store(self) -> RunStore:
        return self.kind.store(self.redis, self.uid, self.ttl)

    async def grant(self, key: str) -> None:
        """(Re)create the run's Redis user; idempotent. ``key`` is what its
        password derives from: something only the controller holds.
        Raises access.AclUnavailable when Redis refuses."""
        await access.grant(self.redis, self.uid, key, self.kind)

    def worker_url(self, url: str, key: str) -> str:
        """``url`` (the controller's own) with the run's user in its place:
        what the workers connect with, handed to them in a Secret."""
        return access.run_url(url, self.uid, key, self.kind)

    async def follow(self) -> Progress:
        """The run's progress, its keys kept alive another TTL while it is
        followed. StateLost when Redis lost them (flushed, restarted
        without persistence, expired): the run cannot finish."""
        store = self.store
        progress = await store.progress()
        await store.touch()
        return progress

    async def revoke(self) -> None:
        """The run's Redis user goes (its workers' connections with it)."""
        await access.revoke(self.redis, self.uid, self.kind)

    async def cleanup(self) -> int:
        """The user and every key of the run; how many keys went."""
        await self.revoke()
        return await self.store.delete()
