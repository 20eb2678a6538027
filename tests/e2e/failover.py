"""What the failover e2e tests share (Sentinel, Cluster): an operator of
their own over the Redis under test, watching a namespace of its own, and
a refresh that the test interrupts mid-run and then expects exact."""

from __future__ import annotations

import base64
import contextlib
import json
import uuid
from collections.abc import Iterator

from proxyrefresh.operator.dispatch import redis_secret_name
from proxyrefresh.pool import Pool
from proxyrefresh.settings import RedisSettings
from tests.e2e.conftest import World, phase_in, refresh, wait_status
from tests.harness.kubectl import Kubectl
from tests.harness.operator_pod import OperatorPod
from tests.harness.scenario import build_candidates


@contextlib.contextmanager
def own_operator(world: World, redis_url: str, prefix: str) -> Iterator[Kubectl]:
    """An operator on ``redis_url`` and the namespace only it watches (not
    t-*: the shared operator stays out), both gone afterwards."""
    namespace = f"{prefix}-{uuid.uuid4().hex[:8]}"
    admin = Kubectl(world.cluster.kubeconfig, namespace)
    admin("create", "namespace", namespace, namespaced=False)
    operator = OperatorPod(
        world.cluster,
        redis_url,
        f"operator-{namespace}",
        PROXYREFRESH_OPERATOR_NAMESPACES=json.dumps([namespace]),
    )
    operator.start()
    try:
        yield admin
    finally:
        operator.delete()
        admin("delete", "namespace", namespace, "--wait=false", namespaced=False, check=False)


def refresh_mid_run(world: World, kubectl: Kubectl) -> tuple[str, str]:
    """A refresh of 64 candidates in 8 chunks, 2 pods at a time, once 2
    chunks are done: its uid, and the URL its workers use (its own user)."""
    cands = build_candidates(world.bed.testbed, [], fleet=8, refused=16, holes=40)
    url = world.lists.put(f"{kubectl.namespace}.txt", cands.text())
    kubectl.apply(
        refresh("failover", [{"url": url}], world.judge, pool="kept", chunkSize=8, parallelism=2)
    )
    wait_status(
        kubectl, "failover", lambda s: (s.get("completedChunks") or 0) >= 2, 120, "two chunks done"
    )
    uid = kubectl.get("proxyrefresh", "failover")["metadata"]["uid"]
    (job,) = kubectl.get("jobs")["items"]
    secret = kubectl.get("secret", redis_secret_name(job["metadata"]["name"]))
    return uid, base64.b64decode(secret["data"]["url"]).decode()


def completes_exactly(kubectl: Kubectl, redis_url: str) -> None:
    """Complete with every candidate checked once and merged once."""
    status = wait_status(kubectl, "failover", phase_in("Complete", "Failed"), 240, "Complete")
    assert status["phase"] == "Complete", status
    assert (status["candidates"], status["checked"], status["live"]) == (64, 64, 8)
    assert (status["totalChunks"], status["completedChunks"]) == (8, 8)
    with RedisSettings(url=redis_url).sync_client() as redis:
        assert Pool(redis, "kept", kubectl.namespace).stats().usable == 8
