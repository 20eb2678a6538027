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
from redis.exceptions import NoPermissionError

from proxyrefresh.constants import RUNS
from proxyrefresh.fanout import access
from proxyrefresh.fanout.store import RunKeys, RunStore
from proxyrefresh.models import Anonymity
from proxyrefresh.operator import pool_access
from proxyrefresh.pool import AsyncPool, NotInPool
from proxyrefresh.pool_keys import PoolKeys
from proxyrefresh.redis_topology import cluster_target
from proxyrefresh.settings import RedisSettings
from tests.conftest import async_wait_for, run_cli, wait_for
from tests.harness import rotator as rot
from tests.harness import testbed as tb
from tests.harness.testbed import LocalProxy, RedisClusterSet, TlsFiles

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


def users_on(cluster: RedisClusterSet, name: str) -> list[bool]:
    """Whether each node that is up has the user ``name``, asked of each alone."""
    found = []
    for node in cluster.nodes:
        if node.proc is not None and node.proc.poll() is None:
            with cluster.node(node.port) as alone:
                found.append(alone.execute_command("ACL", "GETUSER", name) is not None)
    return found


def test_a_runs_user_is_on_every_node_reads_its_run_only_and_comes_back_after_a_restart(
    cluster: RedisClusterSet,
) -> None:
    """Each node keeps its own users: the run's user is made on every node
    (a replica may be promoted), works through the cluster client with the
    worker's commands, opens nothing else, and is made again on a node that
    restarted and forgot it; revoked, it is gone from every node."""
    uid, key = "c1a2b3", "operator-key"
    keys = RunKeys(uid, RUNS.key_prefix)
    name = access.user_name(uid, RUNS)

    async def grant_and_use() -> None:
        operator = RedisSettings(url=cluster.url).client()
        try:
            await operator.set(keys.total_chunks, 3)
            await access.grant(operator, uid, key, RUNS)
            worker = RedisSettings(url=access.run_url(cluster.url, uid, key, RUNS)).client()
            try:
                assert await worker.get(keys.total_chunks) == "3"
                with pytest.raises(NoPermissionError):
                    await worker.get(PoolKeys("team", "eu").entries)
            finally:
                await worker.aclose()
        finally:
            await operator.aclose()

    asyncio.run(grant_and_use())
    assert users_on(cluster, name) == [True] * 6
    restarted = cluster.primary_for(keys.total_chunks)
    assert restarted is not None
    restarted.restart()  # no ACL file: it forgot the user
    assert False in users_on(cluster, name)

    async def again() -> None:
        operator = RedisSettings(url=cluster.url).client()
        try:
            await access.grant(operator, uid, key, RUNS)  # what every step of a run does
            assert users_on(cluster, name) == [True] * 6
            await access.revoke(operator, uid, RUNS)
        finally:
            await operator.aclose()

    asyncio.run(again())
    assert users_on(cluster, name) == [False] * 6


def test_a_kept_user_is_kept_on_every_node(cluster: RedisClusterSet) -> None:
    """A consumer's user (pool_access) made on every node; a node that
    restarted gets it back on the next look, and nowhere is it made twice."""
    kept = pool_access.user("team", "eu")

    async def look() -> bool:
        operator = RedisSettings(url=cluster.url).client()
        try:
            return await kept.keep(operator, "operator-key")
        finally:
            await operator.aclose()

    assert asyncio.run(look()) is True
    assert asyncio.run(look()) is False
    assert users_on(cluster, kept.name) == [True] * 6
    cluster.nodes[3].restart()  # it forgot the user
    # The operator's looks, until every node has it again (a node that has
    # just come back may be left out of the cluster's map for a moment).
    made: list[bool] = []

    def looked_and_everywhere() -> bool:
        made.append(asyncio.run(look()))
        return users_on(cluster, kept.name) == [True] * 6

    wait_for(looked_and_everywhere, 15, "the user on the restarted node")
    assert True in made


async def test_events_are_sharded_on_a_cluster_and_reach_the_operator_the_page_and_watch(
    cluster: RedisClusterSet,
) -> None:
    """On a cluster every publisher and subscriber uses sharded pub/sub
    (SPUBLISH reaches the nodes of its channel's slot only): a pod's
    progress wakes the operator's feed of the run, is relayed to the live
    page and read by ``watch``; a report that changes a pool's usable count
    wakes the feed of the pool."""
    from proxyrefresh.front.ui import Board
    from proxyrefresh.front.watch import Events
    from proxyrefresh.operator.subscriptions import Subscriptions

    uid = "ev1"
    run = RunKeys(uid, RUNS.key_prefix)
    pool = PoolKeys("team", "shard")
    redis = RedisSettings(url=cluster.url).client()
    subs = Subscriptions(redis)
    listing = [{"metadata": {"name": "r", "namespace": "team", "uid": uid,
                             "creationTimestamp": "2026-12-06T00:00:00Z"},
                "spec": {"pool": "shard"}, "status": {"phase": "Processing"}}]  # fmt: skip
    board = Board(redis, ["team"], lambda ns: (listing, []) if ns == "team" else ([], []))
    watching = Events(RedisSettings(url=cluster.url), run.events)
    listening = asyncio.create_task(board.listen())
    try:
        await board.relist()
        run_feed, pool_feed = subs.open(run.events), subs.open(pool.events)
        home = cluster.primary_for(run.events)
        assert home is not None

        async def sharded_subscribers() -> int:
            with cluster.node(home.port) as node:
                ((_, count),) = node.pubsub_shardnumsub(run.events)
            return int(count) if int(count) >= 3 else 0  # the operator's, the page's, watch's

        await async_wait_for(sharded_subscribers, 10, "the sharded subscriptions")
        await redis.set(run.total_chunks, 4)
        await RunStore(redis, uid, prefix=RUNS.key_prefix).report_progress(0, 5, 2)
        assert await run_feed.wait(5)
        await async_wait_for(
            lambda: asyncio.sleep(0.05, board.refreshes[uid].get("checked") == 5),
            5, "the page's row to show the progress",
        )  # fmt: skip
        # watch reads as its loop does: a read may end early with nothing
        event = await asyncio.to_thread(wait_for, lambda: watching.next(0.5), 5, "watch's event")
        assert (event["processed"], event["succeeded"]) == (5, 2)

        shard = AsyncPool(redis, "shard", "team")
        await shard.merge("u-1", [(p.url, True, rot.entry_for(p)) for p in proxies(2)], 3600)
        assert await pool_feed.wait(5)  # the merge's news
        await shard.report_many([(proxies(1)[0].url, False, None)] * 3)  # one fewer usable
        assert await pool_feed.wait(5)
    finally:
        listening.cancel()
        await subs.aclose()
        await redis.aclose()


def test_a_cluster_on_tls_takes_the_pool_a_runs_user_and_the_cli() -> None:
    """``rediss+cluster://`` (managed cluster modes often require TLS):
    every node on TLS only, verified with the CA given; the pool's scripts,
    a run's user made on every node and used with the CA as text (what the
    operator hands its workers), and the ``pool`` commands."""
    bed = tb.Testbed()
    try:
        tls = TlsFiles.make(bed.workdir / "tls")
        cluster = RedisClusterSet(bed, tls=tls)
        assert cluster.url.startswith("rediss+cluster://")
        settings = RedisSettings(url=cluster.url, ca_file=str(tls.ca))
        uid = "tls1"

        async def scenario() -> None:
            redis = settings.client()
            try:
                pool = AsyncPool(redis, "eu", "team")
                await pool.merge("u-1", [(p.url, True, rot.entry_for(p)) for p in proxies(3)], 3600)
                assert len(await pool.get_many(3)) == 3
                await redis.set(RunKeys(uid, RUNS.key_prefix).total_chunks, 1)
                await access.grant(redis, uid, "operator-key", RUNS)
                url = access.run_url(cluster.url, uid, "operator-key", RUNS)
                worker = RedisSettings(url=url, ca_data=settings.ca_pem()).client()
                try:
                    assert await worker.get(RunKeys(uid, RUNS.key_prefix).total_chunks) == "1"
                finally:
                    await worker.aclose()
            finally:
                await redis.aclose()

        asyncio.run(scenario())
        assert users_on(cluster, access.user_name(uid, RUNS)) == [True] * 6
        env = {"PROXYREFRESH_REDIS_URL": cluster.url, "PROXYREFRESH_REDIS_CA_FILE": str(tls.ca)}
        stats = run_cli("pool", "stats", "eu", "-n", "team", "--json", env=env)
        assert stats.returncode == 0, stats.stderr
        assert json.loads(stats.stdout)["size"] == 3
    finally:
        bed.close()
