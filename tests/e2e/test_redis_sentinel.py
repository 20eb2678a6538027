"""A Sentinel-managed Redis, as the common Helm charts give (issue 34): a
refresh whose primary is killed mid-run completes on the real node with
exact counts. The operator and the workers follow the promotion through
the sentinels; the run's users, which the promoted replica never had
(Redis does not replicate ACL changes), are made again by the operator as
it follows the run; a chunk the old primary took with it is done again and
counted once."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from redis.exceptions import AuthenticationError, NoPermissionError
from redis.exceptions import ConnectionError as RedisConnectionError

from proxyrefresh.operator.dispatch import redis_secret_name
from proxyrefresh.pool import Pool
from proxyrefresh.settings import RedisSettings
from tests.conftest import wait_for
from tests.e2e.conftest import World, phase_in, refresh, wait_status
from tests.harness.kubectl import Kubectl
from tests.harness.operator_pod import OperatorPod
from tests.harness.scenario import build_candidates
from tests.harness.testbed import Sentinels

pytestmark = pytest.mark.e2e


@dataclass
class SentinelWorld:
    sentinels: Sentinels
    kubectl: Kubectl  # a namespace only this operator watches


@pytest.fixture
def sentinel_world(world: World) -> Iterator[SentinelWorld]:
    sentinels = Sentinels(world.bed.testbed)
    namespace = f"sen-{uuid.uuid4().hex[:8]}"  # not t-*: the shared operator stays out
    admin = Kubectl(world.cluster.kubeconfig, namespace)
    admin("create", "namespace", namespace, namespaced=False)
    operator = OperatorPod(
        world.cluster,
        sentinels.url,
        f"operator-{namespace}",
        PROXYREFRESH_OPERATOR_NAMESPACES=json.dumps([namespace]),
    )
    operator.start()
    try:
        yield SentinelWorld(sentinels, admin)
    finally:
        operator.delete()
        admin("delete", "namespace", namespace, "--wait=false", namespaced=False, check=False)
        for server in (sentinels.primary, sentinels.replica):
            server.stop()


def authenticates(url: str) -> bool:
    try:
        with RedisSettings(url=url).sync_client() as redis:
            return bool(redis.ping())
    except (AuthenticationError, RedisConnectionError):  # refused, or no primary yet
        return False


def test_a_refresh_completes_exactly_through_a_sentinel_failover(
    world: World, sentinel_world: SentinelWorld
) -> None:
    kubectl, sentinels = sentinel_world.kubectl, sentinel_world.sentinels
    cands = build_candidates(world.bed.testbed, [], fleet=8, refused=16, holes=40)
    url = world.lists.put(f"{kubectl.namespace}.txt", cands.text())
    kubectl.apply(
        refresh("failover", [{"url": url}], world.judge, pool="kept", chunkSize=8, parallelism=2)
    )
    wait_status(
        kubectl, "failover", lambda s: (s.get("completedChunks") or 0) >= 2, 120, "two chunks done"
    )
    old = sentinels.primary_port()
    (job,) = kubectl.get("jobs")["items"]
    secret = kubectl.get("secret", redis_secret_name(job["metadata"]["name"]))
    worker = base64.b64decode(secret["data"]["url"]).decode()  # the run's own user
    sentinels.primary.stop()  # mid-run: chunks left, pods working
    wait_for(lambda: sentinels.primary_port() != old, 30, "the replica's promotion")
    # The promoted replica never had the run's user (ACL changes are not
    # replicated): the operator makes it there as it follows the run, and
    # there too it reads its own run's keys and nothing else.
    wait_for(lambda: authenticates(worker), 30, "the run's user on the promoted replica")
    with RedisSettings(url=worker).sync_client() as redis:
        assert redis.connection_pool.get_master_address()[1] == sentinels.replica.port
        with pytest.raises(NoPermissionError):
            redis.get("proxyrefresh:pool:{elsewhere/pool}:entries")
    status = wait_status(kubectl, "failover", phase_in("Complete", "Failed"), 240, "Complete")
    assert status["phase"] == "Complete", status
    assert (status["candidates"], status["checked"], status["live"]) == (64, 64, 8)
    assert (status["totalChunks"], status["completedChunks"]) == (8, 8)
    with RedisSettings(url=sentinels.url).sync_client() as redis:
        assert Pool(redis, "kept", kubectl.namespace).stats().usable == 8
