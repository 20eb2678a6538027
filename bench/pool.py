"""The pool in Redis: get and report throughput and latency with 100,000
proxies in the pool, and the merge time of 10,000 results.

One real redis-server on loopback. Latency is per call from one client
(what a scraper waits for); throughput is the same calls back to back.
Targets: p99 under 2 ms for get and report, a merge of 10,000 under 2 s.

    .venv/bin/python -m bench.pool [--size 100000] [--calls 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable

from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from proxyrefresh.models import Anonymity, Protocol
from proxyrefresh.pool import AsyncPool, Pool, PoolEntry
from tests.harness.testbed import RedisServer, Testbed

PROTOCOLS = list(Protocol)
LEVELS = list(Anonymity)


def entry(i: int) -> PoolEntry:
    return PoolEntry(
        proxy=f"{PROTOCOLS[i % 4].value}://127.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}:8080",
        protocol=PROTOCOLS[i % 4],
        host=f"127.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}",
        port=8080,
        anonymity=LEVELS[i % 3],
        latency_ms=float(50 + (i * 37) % 5000),
        last_checked=time.time(),
        last_ok=time.time(),
    )


async def merge(url: str, name: str, entries: list[PoolEntry], uid: str) -> float:
    client = AsyncRedis.from_url(url, decode_responses=True)
    started = time.perf_counter()
    await AsyncPool(client, name).merge(uid, [(e.proxy, True, e) for e in entries], 3600)
    took = time.perf_counter() - started
    await client.aclose()
    return took


def timed(calls: int, call: Callable[[int], object]) -> tuple[float, list[float]]:
    latencies = []
    started = time.perf_counter()
    for i in range(calls):
        t0 = time.perf_counter()
        call(i)
        latencies.append((time.perf_counter() - t0) * 1000)
    return calls / (time.perf_counter() - started), latencies


def line(what: str, rate: float, latencies: list[float], target_ms: float) -> str:
    q = statistics.quantiles(latencies, n=100)
    p50, p99 = q[49], q[98]
    return (
        f"{what:<34} {rate:>8.0f}/s  p50 {p50:.3f} ms  p99 {p99:.3f} ms "
        f"(target p99 < {target_ms} ms: {p99 / target_ms:.2f} of it)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--merge", type=int, default=10_000)
    args = parser.parse_args()
    with Testbed() as bed:
        redis = RedisServer(bed)
        print(f"filling a pool of {args.size} proxies ...")
        entries = [entry(i) for i in range(args.size)]
        fill = asyncio.run(merge(redis.url, "bench", entries, "fill"))
        print(f"{'merge of ' + str(args.size) + ' (fill)':<34} {fill:.2f} s")
        fresh = [entry(i) for i in range(args.size, args.size + args.merge)]
        took = asyncio.run(merge(redis.url, "bench", fresh, "merge"))
        print(
            f"{'merge of ' + str(args.merge) + ' results':<34} {took:.2f} s "
            f"(target < 2 s: {took / 2:.2f} of it)"
        )
        with Redis.from_url(redis.url, decode_responses=True) as client:
            pool = Pool(client, "bench")
            ids = [e.proxy for e in entries]
            rate, lat = timed(args.calls, lambda i: pool.get())
            print(line("get (no filter)", rate, lat, 2))
            rate, lat = timed(
                args.calls,
                lambda i: pool.get(
                    protocol=Protocol.SOCKS5, min_anonymity=Anonymity.ELITE, max_latency_ms=1000
                ),
            )
            print(line("get (socks5, elite, <= 1000 ms)", rate, lat, 2))
            rate, lat = timed(args.calls, lambda i: pool.report(ids[i * 7 % len(ids)], True, 120))
            print(line("report", rate, lat, 2))
            info = client.info("memory")
            print(f"Redis memory with the pool: {info['used_memory'] / 2**20:.1f} MiB")
        redis.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
