"""A pool's leases and reports on one Redis and on a Redis Cluster (issue 34).

Many pools (each in one hash slot: on a cluster they spread over its three
primaries), many clients leasing back to back (a pick, then a report with
the latency), for the same time on each topology: one redis-server, then a
cluster of three primaries with a replica each, all on loopback. Printed:
leases+reports per second for each, and the ratio. The clients share one
Python process, so on a small machine the client side may be what limits
both.

    .venv/bin/python -m bench.pool_topologies [--pools 12] [--clients 48] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from proxyrefresh.models import Anonymity
from proxyrefresh.pool import AsyncPool
from proxyrefresh.settings import RedisSettings
from tests.harness import rotator as rot
from tests.harness.testbed import LocalProxy, RedisClusterSet, RedisServer, Testbed


async def rate(url: str, pools: int, clients: int, seconds: float) -> float:
    redis = RedisSettings(url=url).client(max_connections=clients)
    try:
        members = [
            LocalProxy(f"p{i}", f"http://127.0.0.41:{3000 + i}", Anonymity.ELITE) for i in range(50)
        ]
        items = [(p.url, True, rot.entry_for(p)) for p in members]
        names = [f"pool{i}" for i in range(pools)]
        for name in names:
            await AsyncPool(redis, name, "bench").merge(f"seed-{name}", items, 3600)
        done = 0
        deadline = time.monotonic() + seconds

        async def client(n: int) -> None:
            nonlocal done
            pool = AsyncPool(redis, names[n % pools], "bench")
            while time.monotonic() < deadline:
                async with pool.lease():
                    pass
                done += 1

        started = time.monotonic()
        await asyncio.gather(*(client(n) for n in range(clients)))
        return done / (time.monotonic() - started)
    finally:
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pools", type=int, default=12)
    parser.add_argument("--clients", type=int, default=48)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with Testbed() as bed:
        one = RedisServer(bed)
        cluster = RedisClusterSet(bed)
        figures = {}
        for label, url in (("one redis-server", one.url), ("cluster, 3 primaries", cluster.url)):
            figures[label] = asyncio.run(rate(url, args.pools, args.clients, args.seconds))
            print(f"{label:<22} {figures[label]:>8,.0f} leases+reports/s "
                  f"({args.pools} pools, {args.clients} clients, {args.seconds:g} s)")  # fmt: skip
    ratio = figures["cluster, 3 primaries"] / figures["one redis-server"]
    print(f"cluster vs one node: {ratio:.2f}")


if __name__ == "__main__":
    main()
