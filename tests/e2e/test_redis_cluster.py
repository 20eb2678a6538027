"""A Redis Cluster, as managed cluster modes give (issue 34): a refresh on
the real node completes with exact counts while the primary that serves
its keys is killed and its replica takes over. The operator and the
workers follow the slot's move by themselves; the run's user, which the
promoted replica never had (a cluster does not spread ACL changes), is
made again there by the operator as it follows the run; a chunk the old
primary took with it is done again and counted once."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from redis.exceptions import NoPermissionError, RedisError

from proxyrefresh.constants import RUNS
from proxyrefresh.operator.dispatch import redis_secret_name
from proxyrefresh.pool import Pool
from proxyrefresh.pool_keys import PoolKeys
from proxyrefresh.settings import RedisSettings
from tests.conftest import wait_for
from tests.e2e.conftest import World, phase_in, refresh, wait_status
from tests.harness.kubectl import Kubectl
from tests.harness.operator_pod import OperatorPod
from tests.harness.scenario import build_candidates
from tests.harness.testbed import RedisClusterSet

pytestmark = pytest.mark.e2e


@dataclass
class ClusterWorld:
    redis: RedisClusterSet
    kubectl: Kubectl  # a namespace only this operator watches


@pytest.fixture
def cluster_world(world: World) -> Iterator[ClusterWorld]:
    redis = RedisClusterSet(world.bed.testbed)
    namespace = f"rcl-{uuid.uuid4().hex[:8]}"  # not t-*: the shared operator stays out
    admin = Kubectl(world.cluster.kubeconfig, namespace)
    admin("create", "namespace", namespace, namespaced=False)
    operator = OperatorPod(
        world.cluster,
        redis.url,
        f"operator-{namespace}",
        PROXYREFRESH_OPERATOR_NAMESPACES=json.dumps([namespace]),
    )
    operator.start()
    try:
        yield ClusterWorld(redis, admin)
    finally:
        operator.delete()
        admin("delete", "namespace", namespace, "--wait=false", namespaced=False, check=False)
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
    cands = build_candidates(world.bed.testbed, [], fleet=8, refused=16, holes=40)
    url = world.lists.put(f"{kubectl.namespace}.txt", cands.text())
    kubectl.apply(
        refresh("failover", [{"url": url}], world.judge, pool="kept", chunkSize=8, parallelism=2)
    )
    wait_status(
        kubectl, "failover", lambda s: (s.get("completedChunks") or 0) >= 2, 120, "two chunks done"
    )
    uid = kubectl.get("proxyrefresh", "failover")["metadata"]["uid"]
    run_key = RUNS.keys(uid).events
    (job,) = kubectl.get("jobs")["items"]
    secret = kubectl.get("secret", redis_secret_name(job["metadata"]["name"]))
    worker = base64.b64decode(secret["data"]["url"]).decode()  # the run's own user
    old = cluster.primary_for(run_key)
    assert old is not None
    old.stop()  # mid-run: chunks left, pods working
    wait_for(lambda: cluster.primary_for(run_key) not in (None, old), 30, "the replica's promotion")
    # The promoted replica never had the run's user: the operator makes it
    # there, and there too it reads its own run's keys and nothing else.
    wait_for(lambda: reads_its_run(worker, run_key), 30, "the run's user on the promoted replica")
    with RedisSettings(url=worker).sync_client() as redis, pytest.raises(NoPermissionError):
        redis.get(PoolKeys("elsewhere", "pool").entries)
    status = wait_status(kubectl, "failover", phase_in("Complete", "Failed"), 240, "Complete")
    assert status["phase"] == "Complete", status
    assert (status["candidates"], status["checked"], status["live"]) == (64, 64, 8)
    assert (status["totalChunks"], status["completedChunks"]) == (8, 8)
    with RedisSettings(url=cluster.url).sync_client() as redis:
        assert Pool(redis, "kept", kubectl.namespace).stats().usable == 8
