"""A failover as a pool's client sees it, Sentinel and Cluster (issue 34).

A primary, its replica and three sentinels on loopback (tests/harness:
down after 1 s, quorum 2); then a Redis Cluster of three primaries and
their replicas (node timeout 2 s). A client leases and reports through
``redis+sentinel://`` (``redis+cluster://``) back to back; the primary (the
one serving the pool's slot) is killed; printed: the rate before the kill,
and the gap from the kill to the first lease that went through on the
promoted replica (every lease in between either landed or failed with an
error the client could retry: none is lost silently).

    .venv/bin/python -m bench.redis_failover [--seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import time
from collections.abc import Callable

from redis.exceptions import RedisError

from proxyrefresh.pool import AsyncPool
from proxyrefresh.settings import RedisSettings
from tests.harness import rotator as rot
from tests.harness.testbed import LocalProxy, RedisClusterSet, Sentinels, Testbed

TARGET_GAP = 30.0  # the bound for service after a promotion


async def measure(
    url: str, kill: Callable[[str], None], seconds: float
) -> tuple[float, float, int]:
    """``kill`` stops the primary that serves the key it is given."""
    proxies = [LocalProxy(f"p{i}", f"http://127.0.0.41:{1000 + i}", None) for i in range(50)]
    redis = RedisSettings(url=url).client()
    pool = AsyncPool(redis, "failover", "bench")
    try:
        await pool.merge("seed", [(p.url, True, rot.entry_for(p)) for p in proxies], 3600)
        started, done = time.monotonic(), 0
        while time.monotonic() - started < seconds:
            async with pool.lease():
                done += 1
        rate = done / (time.monotonic() - started)
        kill(pool.calls.keys.entries)
        killed, errors = time.monotonic(), 0
        while True:
            try:
                async with pool.lease():
                    return rate, time.monotonic() - killed, errors
            except RedisError:
                errors += 1
                await asyncio.sleep(0.1)
    finally:
        await redis.aclose()


def kill_sentinel_primary(sentinels: Sentinels, key: str) -> None:
    sentinels.primary.stop()


def kill_cluster_primary(cluster: RedisClusterSet, key: str) -> None:
    node = cluster.primary_for(key)
    assert node is not None
    node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    for name in ("redis+sentinel://", "redis+cluster://"):
        with Testbed() as bed:
            if name == "redis+sentinel://":
                sentinels = Sentinels(bed)
                url, kill = sentinels.url, functools.partial(kill_sentinel_primary, sentinels)
            else:
                cluster = RedisClusterSet(bed)
                url, kill = cluster.url, functools.partial(kill_cluster_primary, cluster)
            rate, gap, errors = asyncio.run(measure(url, kill, args.seconds))
        print(f"leases+reports through {name} (one client): {rate:,.0f} per second")
        print(
            f"{name} primary killed -> first lease on the promoted replica: {gap:.1f} s "
            f"(target < {TARGET_GAP:g} s: {'ok' if gap < TARGET_GAP else 'over'}); "
            f"{errors} leases failed with a retryable error meanwhile"
        )


if __name__ == "__main__":
    main()
