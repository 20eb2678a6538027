"""The real local control plane with a real node, once per session; a
namespace per test.

When a test fails, the logs of its namespace's pods (``kubectl logs``) and
the end of kubelet's and the controller manager's are attached to the report.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from proxyrefresh.constants import RUNS
from proxyrefresh.fanout.store import RunStore
from tests.conftest import Bed, wait_for
from tests.harness import node
from tests.harness.cluster import Cluster
from tests.harness.kubectl import Kubectl
from tests.harness.operator_pod import NAMESPACE as OPERATOR_NAMESPACE
from tests.harness.operator_pod import OperatorPod
from tests.harness.scenario import ListServer
from tests.harness.testbed import LocalProxy, RedisServer

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    forwarding = node.forwarding()
    root = Path(tempfile.mkdtemp(prefix="proxyrefresh-cluster-"))
    root.chmod(0o755)
    local = Cluster(root)
    try:
        local.up()
    except (FileNotFoundError, node.NodeUnavailable) as exc:
        local.down()
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(str(exc), pytrace=False)
    try:
        yield local
        pulls = node.pull_attempts(local.node.containerd_log)
    finally:
        local.down()
        # Failing tests already carry the logs they need in their reports.
        shutil.rmtree(root, ignore_errors=True)
    assert not pulls, f"containerd tried to pull images: {pulls[:5]}"
    # Nothing the node did turned IP forwarding on (the bridge plugin would,
    # for a gateway), nor left its guard routes behind.
    assert node.forwarding() == forwarding == node.FORWARDING_OFF
    assert not node.guard_routes_left(), "the node's unreachable routes outlived it"


@pytest.fixture
def kubectl(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[Kubectl]:
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    k = Kubectl(cluster.kubeconfig, namespace)
    k("create", "namespace", namespace, namespaced=False)
    yield k
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for name, text in pod_logs(k):
            report.sections.append((f"pod {name}", text))
        for name in ("kubelet", "kube-controller-manager"):
            text = (cluster.logs / f"{name}.log").read_text(errors="replace")
            report.sections.append((name, text[-6000:]))
    k("delete", "namespace", namespace, "--wait=false", namespaced=False, check=False)


def pod_logs(k: Kubectl, tail: int = 200) -> list[tuple[str, str]]:
    """What each container of the namespace's pods printed (its last
    ``tail`` lines), as ``kubectl logs`` shows it."""
    listing = k("get", "pods", "-o", "json", check=False)
    found = []
    for item in json.loads(listing.stdout or '{"items": []}')["items"]:
        name = item["metadata"]["name"]
        for container in item["spec"]["containers"]:
            args = [name, "-c", container["name"], f"--tail={tail}"]
            text = k("logs", *args, check=False).stdout
            found.append((f"{name}/{container['name']}", text))
    return found


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@dataclass
class World:
    """Everything a refresh needs, running for real on this machine."""

    cluster: Cluster
    bed: Bed
    redis: RedisServer
    lists: ListServer
    operator: OperatorPod

    @property
    def judge(self) -> str:
        return self.bed.judge

    def live_fixed(self) -> list[LocalProxy]:
        return [p for p in self.bed.proxies if p.expect is not None]

    async def store(self, uid: str) -> RunStore:
        return RUNS.store(Redis.from_url(self.redis.url, decode_responses=True), uid)


VIEWER_SECRET = f"{OPERATOR_NAMESPACE}/viewer"


@pytest.fixture(scope="session")
def world(cluster: Cluster, bed: Bed) -> Iterator[World]:
    k = Kubectl(cluster.kubeconfig, "default")
    k.install_crds()
    redis = RedisServer(bed.testbed, appendonly=True)
    lists = ListServer(bed.testbed.workdir / "lists")
    # Test namespaces only (t-*): the chart's own operator owns its namespace.
    operator = OperatorPod(
        cluster,
        redis.url,
        "operator",
        PROXYREFRESH_OPERATOR_NAMESPACES='["t-*"]',
        PROXYREFRESH_OPERATOR_VIEWER_SECRET=VIEWER_SECRET,  # the page's user, kept
    )
    operator.start()
    try:
        yield World(cluster, bed, redis, lists, operator)
    finally:
        operator.delete()
        lists.close()
        redis.stop()


def refresh(name: str, sources: list[dict[str, Any]], judge: str, **spec: Any) -> dict[str, Any]:
    checker = {"judges": [judge], "timeoutSeconds": 2, **spec.pop("checker", {})}
    return {
        "apiVersion": "proxyrefresh.dev/v1alpha1",
        "kind": "ProxyRefresh",
        "metadata": {"name": name},
        "spec": {"sources": sources, "checker": checker, **spec},
    }


def wait_status(
    kubectl: Kubectl, name: str, predicate: Any, within: float, what: str
) -> dict[str, Any]:
    """Poll the refresh until ``predicate(status)``; fail naming ``what``."""

    def check() -> dict[str, Any] | None:
        status = kubectl.get("proxyrefresh", name).get("status") or {}
        return status if predicate(status) else None

    return wait_for(check, within, f"{name}: {what}")


def phase_in(*phases: str) -> Any:
    return lambda status: status.get("phase") in phases
