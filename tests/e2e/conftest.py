"""The real local control plane, once per session; a namespace per test.

When a test fails, the control plane's and the pods' logs of its namespace
are attached to the report.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from proxyrefresh.fanout.store import RunStore
from tests.conftest import Bed, wait_for
from tests.harness.cluster import Cluster
from tests.harness.kubectl import Kubectl
from tests.harness.scenario import ListServer, OperatorProcess
from tests.harness.testbed import LocalProxy, RedisServer

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="proxyrefresh-cluster-"))
    root.chmod(0o755)
    local = Cluster(root)
    try:
        local.up(node_pods=int(os.environ.get("PROXYREFRESH_NODE_PODS", "16")))
    except FileNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield local
    finally:
        local.down()
        # Failing tests already carry the logs they need in their reports.
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def kubectl(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[Kubectl]:
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    k = Kubectl(cluster.kubeconfig, namespace)
    k("create", "namespace", namespace, namespaced=False)
    yield k
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for pod_dir in sorted((cluster.dir / "pods").glob(f"{namespace}_*")):
            for log in pod_dir.glob("*.log"):
                report.sections.append((f"pod {pod_dir.name}/{log.name}", log.read_text()))
        for name in ("podrunner", "kube-controller-manager"):
            text = (cluster.logs / f"{name}.log").read_text(errors="replace")
            report.sections.append((name, text[-6000:]))
    k("delete", "namespace", namespace, "--wait=false", namespaced=False, check=False)


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
    operator: OperatorProcess

    @property
    def judge(self) -> str:
        return self.bed.judge

    def live_fixed(self) -> list[LocalProxy]:
        return [p for p in self.bed.proxies if p.expect is not None]

    async def store(self, uid: str) -> RunStore:
        return RunStore(Redis.from_url(self.redis.url, decode_responses=True), uid)


@pytest.fixture(scope="session")
def world(cluster: Cluster, bed: Bed) -> Iterator[World]:
    k = Kubectl(cluster.kubeconfig, "default")
    k.install_crds()
    redis = RedisServer(bed.testbed, appendonly=True)
    lists = ListServer(bed.testbed.workdir / "lists")
    # Test namespaces only (t-*): the chart's own operator owns its namespace.
    operator = OperatorProcess(
        cluster.kubeconfig,
        redis.url,
        cluster.logs / "operator.log",
        PROXYREFRESH_OPERATOR_NAMESPACES='["t-*"]',
    )
    operator.start()
    try:
        yield World(cluster, bed, redis, lists, operator)
    finally:
        operator.stop()
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
