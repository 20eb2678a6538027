"""A Redis Cluster (three primaries, a replica each), as the managed cluster
modes offer (issue 34): the pool's clients take ``redis+cluster://`` with a
few seed nodes. Every pool script runs against it (merge, finish, pick in
batches, reports in batches, stats, sessions), pools land on different
nodes, and the CLI reads them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from proxyrefresh.models import Anonymity
from proxyrefresh.pool import AsyncPool, NotInPool
from proxyrefresh.redis_topology import cluster_target
from proxyrefresh.settings import RedisSettings
from tests.conftest import run_cli
from tests.harness import rotator as rot
from tests.harness import testbed as tb
from tests.harness.testbed import LocalProxy, RedisClusterSet

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterSet]:
    bed = tb.Testbed()
    try:
        yield RedisClusterSet(bed)
    finally:
        bed.close()


def proxies(count: int) -> list[LocalProxy]:
    return [
        LocalProxy(f"p{i}", f"http://127.0.0.41:{2000 + i}", Anonymity.ELITE) for i in range(count)
    ]


def test_every_pool_script_runs_on_a_cluster_and_pools_spread_over_its_nodes(
    cluster: RedisClusterSet,
) -> None:
    async def scenario() -> list[str]:
        redis = RedisSettings(url=cluster.url).client()
        try:
            homes = []
            for name in ("eu", "us", "asia", "au"):
                pool = AsyncPool(redis, name, "team")
                items = [(p.url, True, rot.entry_for(p)) for p in proxies(10)]
                await pool.merge(f"u-{name}", items, 3600)
                picks = await pool.get_many(20)
                assert len(picks) == 20
                assert len({p.port for p in picks}) == 10  # each its turn, twice
                outcomes = [(picks[0].proxy, False, None), ("http://127.0.0.9:1", True, 1.0)]
                reports = await pool.report_many(outcomes)
                assert isinstance(reports[1], NotInPool)
                assert (await pool.stats()).size == 10
                await pool.hold_session("s1", picks[1], 60)
                assert await pool.session("s1") == picks[1]
                slot = await redis.execute_command("CLUSTER", "KEYSLOT", pool.calls.keys.entries)  # type: ignore[no-untyped-call]
                homes.append(str(redis.get_node_from_key(pool.calls.keys.entries)))  # type: ignore[attr-defined]
                assert isinstance(slot, int)
            return homes
        finally:
            await redis.aclose()

    homes = asyncio.run(scenario())
    assert len(set(homes)) > 1, homes  # the pools do not all live on one node
    stats = run_cli("pool", "stats", "eu", "-n", "team", "--json",
                    env={"PROXYREFRESH_REDIS_URL": cluster.url})  # fmt: skip
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["size"] == 10


def test_a_cluster_url_is_read_whole_and_refused_with_a_database() -> None:
    target = cluster_target("redis+cluster://u:p@10.0.0.1:7000,10.0.0.2:7001")
    assert target.nodes == [("10.0.0.1", 7000), ("10.0.0.2", 7001)]
    assert (target.username, target.password) == ("u", "p")
    with pytest.raises(ValueError, match="database 0 only"):
        cluster_target("redis+cluster://10.0.0.1:7000/3")
