"""A TLS-only Redis with a CA of its own, as most managed offerings are
(issue 34): a refresh runs on the real node end to end. The operator
connects with the CA, hands it to the workers as PEM text (they cannot read
its files), and each worker connects as its run's ACL user over TLS."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from proxyrefresh.pool import Pool
from proxyrefresh.settings import RedisSettings
from tests.e2e.conftest import World, phase_in, refresh, wait_status
from tests.harness.kubectl import Kubectl
from tests.harness.operator_pod import OperatorPod
from tests.harness.scenario import build_candidates
from tests.harness.testbed import RedisServer, TlsFiles

pytestmark = pytest.mark.e2e


@dataclass
class TlsWorld:
    redis: RedisServer
    settings: RedisSettings  # the operator's: URL and CA
    kubectl: Kubectl  # a namespace only the TLS operator watches


@pytest.fixture
def tls_world(world: World) -> Iterator[TlsWorld]:
    tls = TlsFiles.make(world.bed.testbed.workdir / f"tls-{uuid.uuid4().hex[:6]}")
    redis = RedisServer(world.bed.testbed, tls=tls)
    namespace = f"tls-{uuid.uuid4().hex[:8]}"  # not t-*: the shared operator stays out
    admin = Kubectl(world.cluster.kubeconfig, namespace)
    admin("create", "namespace", namespace, namespaced=False)
    pem = tls.ca.read_text()
    operator = OperatorPod(
        world.cluster,
        redis.url,
        f"operator-{namespace}",
        PROXYREFRESH_OPERATOR_NAMESPACES=json.dumps([namespace]),
        PROXYREFRESH_REDIS_CA_DATA=pem,
    )
    operator.start()
    try:
        yield TlsWorld(redis, RedisSettings(url=redis.url, ca_data=pem), admin)
    finally:
        operator.delete()
        admin("delete", "namespace", namespace, "--wait=false", namespaced=False, check=False)
        redis.stop()


def test_a_tls_only_redis_with_acl_users_runs_a_refresh(world: World, tls_world: TlsWorld) -> None:
    kubectl = tls_world.kubectl
    cands = build_candidates(world.bed.testbed, [], fleet=6, refused=14, holes=0)
    url = world.lists.put(f"{kubectl.namespace}.txt", cands.text())
    kubectl.apply(refresh("over-tls", [{"url": url}], world.judge, pool="sealed", chunkSize=5))
    status = wait_status(kubectl, "over-tls", phase_in("Complete", "Failed"), 180, "Complete")
    assert status["phase"] == "Complete", status
    assert (status["candidates"], status["checked"], status["live"]) == (20, 20, 6)
    with tls_world.settings.sync_client() as redis:
        assert Pool(redis, "sealed", kubectl.namespace).stats().usable == 6
    # The workers verified the server with the CA they were handed, as
    # their run's own user (the URL in the run's Secret, never the operator's).
    (job,) = kubectl.get("jobs")["items"]
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PROXYREFRESH_REDIS_CA_DATA"]["value"] == tls_world.settings.ca_data
    assert "secretKeyRef" in env["PROXYREFRESH_REDIS_URL"]["valueFrom"]
