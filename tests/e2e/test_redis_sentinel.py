"""A Sentinel-managed Redis, as the common Helm charts give (issue 34): a
refresh whose primary is killed mid-run completes on the real node with
exact counts. The operator and the workers follow the promotion through
the sentinels; the run's users, which the promoted replica never had
(Redis does not replicate ACL changes), are made again by the operator as
it follows the run; a chunk the old primary took with it is done again and
counted once."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from redis.exceptions import AuthenticationError, NoPermissionError
from redis.exceptions import ConnectionError as RedisConnectionError

from proxyrefresh.settings import RedisSettings
from tests.conftest import wait_for
from tests.e2e.conftest import World
from tests.e2e.failover import completes_exactly, own_operator, refresh_mid_run
from tests.harness.kubectl import Kubectl
from tests.harness.testbed import Sentinels

pytestmark = pytest.mark.e2e


@dataclass
class SentinelWorld:
    sentinels: Sentinels
    kubectl: Kubectl  # a namespace only this operator watches


@pytest.fixture
def sentinel_world(world: World) -> Iterator[SentinelWorld]:
    sentinels = Sentinels(world.bed.testbed)
    try:
        with own_operator(world, sentinels.url, "sen") as kubectl:
            yield SentinelWorld(sentinels, kubectl)
    finally:
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
    old = sentinels.primary_port()
    _, worker = refresh_mid_run(world, kubectl)
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
    completes_exactly(kubectl, sentinels.url)
