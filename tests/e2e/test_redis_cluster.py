"""A Redis Cluster, as managed cluster modes give (issue 34): a refresh on
the real node completes with exact counts while the primary that serves
its keys is killed and its replica takes over. The operator and the
workers follow the slot's move by themselves; the run's user, which the
promoted replica never had (a cluster does not spread ACL changes), is
made again there by the operator as it follows the run; a chunk the old
primary took with it is done again and counted once."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from redis.exceptions import NoPermissionError, RedisError

from proxyrefresh.constants import RUNS
from proxyrefresh.pool_keys import PoolKeys
from proxyrefresh.settings import RedisSettings
from tests.conftest import wait_for
from tests.e2e.conftest import World
from tests.e2e.failover import completes_exactly, own_operator, refresh_mid_run
from tests.harness.kubectl import Kubectl
from tests.harness.testbed import RedisClusterSet

pytestmark = pytest.mark.e2e


@dataclass
class ClusterWorld:
    redis: RedisClusterSet
    kubectl: Kubectl  # a namespace only this operator watches


@pytest.fixture
def cluster_world(world: World) -> Iterator[ClusterWorld]:
    redis = RedisClusterSet(world.bed.testbed)
    try:
        with own_operator(world, redis.url, "rcl") as kubectl:
            yield ClusterWorld(redis, kubectl)
    finally:
        for node in redis.nodes:
            node.stop()


def reads_its_run(url: str, key: str) -> bool:
    """The run's user, through the cluster, reads a key of its run."""
    try:
        with RedisSettings(url=url).sync_client() as redis:
            redis.exists(key)
            return True
    except RedisError:  # not made there yet, or the slot is still moving
        return False


def test_a_refresh_completes_exactly_on_a_cluster_through_a_primary_failover(
    world: World, cluster_world: ClusterWorld
) -> None:
    kubectl, cluster = cluster_world.kubectl, cluster_world.redis
    uid, worker = refresh_mid_run(world, kubectl)
    run_key = RUNS.keys(uid).events
    old = cluster.primary_for(run_key)
    assert old is not None
    old.stop()  # mid-run: chunks left, pods working
    wait_for(lambda: cluster.primary_for(run_key) not in (None, old), 30, "the replica's promotion")
    # The promoted replica never had the run's user: the operator makes it
    # there, and there too it reads its own run's keys and nothing else.
    wait_for(lambda: reads_its_run(worker, run_key), 30, "the run's user on the promoted replica")
    with RedisSettings(url=worker).sync_client() as redis, pytest.raises(NoPermissionError):
        redis.get(PoolKeys("elsewhere", "pool").entries)
    completes_exactly(kubectl, cluster.url)
