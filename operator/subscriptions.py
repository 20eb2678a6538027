"""One Redis pub/sub connection for every channel the operator follows.

Every active refresh follows its run's events channel and every ProxyPool
its pool's. A connection each made the operator's Redis use grow with the
number of objects: at redis-py's default ceiling of 100 connections, a
namespace with 110 refreshes left every other tenant's refresh unable to
reach Redis. Here one connection subscribes to all of them and one reader
wakes whoever follows the channel a message arrived on; following and
leaving are SUBSCRIBE and UNSUBSCRIBE on that connection.

A follower is only woken: it reads the state itself (a message is a hint,
never the data), so a message lost while Redis was away costs nothing but
the heartbeat's delay. While the connection is down every follower is
woken once, so its next step sees the outage and says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from proxyrefresh.redis_topology import publish_verb

log = logging.getLogger("proxyrefresh.operator")
# How long the reader blocks on the connection before it brings the
# subscriptions in line with the followers: a new follower's channel is
# subscribed within this long (its first step does not wait for it).
READ_TIMEOUT = 0.25
RECONNECT_DELAY = 1.0


class Feed:
    """One follower's news from one channel: set by the reader, taken by
    :meth:`wait`."""

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self._news = asyncio.Event()

    def wake(self) -> None:
        self._news.set()

    async def wait(self, timeout: float) -> bool:
        """True if news came (now or since the last wait), False after ``timeout``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._news.wait(), timeout)
        news = self._news.is_set()
        self._news.clear()
        return news


class Subscriptions:
    """The operator's one pub/sub connection and the feeds that share it.

    Following and leaving never touch Redis (a follower must not wait on a
    Redis that is away): the reader alone subscribes and unsubscribes, in
    line with the followers, between its reads."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        # Sharded on a cluster, as every publisher decides (publish_verb).
        self.sharded = publish_verb(redis) == "SPUBLISH"
        self._feeds: dict[str, set[Feed]] = {}
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None

    @property
    def channels(self) -> int:
        """How many channels are followed."""
        return len(self._feeds)

    def open(self, channel: str) -> Feed:
        feed = Feed(channel)
        self._feeds.setdefault(channel, set()).add(feed)
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read(), name="redis-subscriptions")
        return feed

    def close(self, feed: Feed) -> None:
        feeds = self._feeds.get(feed.channel)
        if feeds is not None:
            feeds.discard(feed)
            if not feeds:
                del self._feeds[feed.channel]

    def wake(self, channel: str) -> None:
        """Wake whoever follows ``channel`` in this process, as a message on
        it would (a refresh's scrape, running beside its loop, has news)."""
        for feed in self._feeds.get(channel, ()):
            feed.wake()

    @contextlib.asynccontextmanager
    async def follow(self, channel: str) -> AsyncIterator[Feed]:
        feed = self.open(channel)
        try:
            yield feed
        finally:
            self.close(feed)

    async def _read(self) -> None:
        """Wake the feeds of each message's channel, until nobody follows."""
        if self._pubsub is None:
            self._pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        while True:
            try:
                if not await self._align():
                    return
                message = await self._next_message()
            except (RedisError, OSError) as exc:
                log.info("Redis events: %s; every follower steps; again in %gs",
                         exc, RECONNECT_DELAY)  # fmt: skip
                self._wake_all()
                await self._reopen()
                await asyncio.sleep(RECONNECT_DELAY)
                continue
            if message is not None:
                for feed in self._feeds.get(str(message.get("channel")), ()):
                    feed.wake()

    async def _align(self) -> bool:
        """Subscribe what is followed, unsubscribe what is not; False once
        nothing is followed or subscribed (the reader then ends)."""
        pubsub = self._pubsub
        channels = pubsub.shard_channels if self.sharded else pubsub.channels
        subscribed = set(channels)
        wanted = set(self._feeds)
        if wanted - subscribed:
            join = pubsub.ssubscribe if self.sharded else pubsub.subscribe
            await join(*(wanted - subscribed))
        if subscribed - wanted:
            leave = pubsub.sunsubscribe if self.sharded else pubsub.unsubscribe
            await leave(*(subscribed - wanted))
            # redis-py forgets a channel only when the server's answer is read.
            for channel in subscribed - wanted:
                channels.pop(channel, None)
        # Looked at again after the awaits: a follower that came meanwhile
        # found this reader running and started none of its own.
        return bool(self._feeds)

    async def _next_message(self) -> dict[str, Any] | None:
        if self.sharded:
            message = await self._pubsub.get_sharded_message(
                ignore_subscribe_messages=True, timeout=READ_TIMEOUT
            )
        else:
            message = await self._pubsub.get_message(timeout=READ_TIMEOUT)
        return message  # type: ignore[no-any-return]

    async def _reopen(self) -> None:
        """A new pub/sub connection, subscribed afresh by the next align: a
        cluster's stays on the node it first chose, which may be the one
        that died (one server's would reconnect by itself)."""
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()
        self._pubsub = self.redis.pubsub(ignore_subscribe_messages=True)

    def _wake_all(self) -> None:
        for feeds in list(self._feeds.values()):
            for feed in feeds:
                feed.wake()

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
