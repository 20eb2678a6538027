"""The product as a user deploys it, on a real node: the image built from the
repository's Dockerfile (hack/image.sh), run by kubelet, containerd and runc
as real containers under the chart's securityContext.

The node's pods use its network (the chart's ``hostNetwork``): the test
bed's judge, proxies and Redis live on this machine's loopback, which the pod
network cannot reach, and the ``kubernetes`` Service's ClusterIP has no
kube-proxy behind it, so the chart's ``hostNetwork.apiServer`` names the API
server. One pod stays on the CNI bridge to show that a pod's own namespace
has no way out.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from proxyrefresh import __version__
from proxyrefresh.fanout.job import CONTAINER_SECURITY, POD_SECURITY
from tests.conftest import Bed, wait_for
from tests.e2e.test_chart import helm, what_ran
from tests.harness import node as real_node
from tests.harness.cluster import Cluster
from tests.harness.image import IMAGE
from tests.harness.kubectl import Kubectl
from tests.harness.testbed import RedisServer, free_port
from tests.harness.waiting import WaitTimeout
from tests.integration.test_chart import CHART

pytestmark = pytest.mark.e2e
NAMESPACE = "prf-node"


@pytest.fixture(scope="module")
def node_cluster(cluster: Cluster) -> Cluster:
    """The session's cluster: one real node on a machine at a time."""
    return cluster


@pytest.fixture(scope="module")
def k(node_cluster: Cluster) -> Iterator[Kubectl]:
    kubectl = Kubectl(node_cluster.kubeconfig, NAMESPACE)
    kubectl.install_crds()
    kubectl("create", "namespace", NAMESPACE, namespaced=False, check=False)
    wait_for(
        lambda: kubectl("get", "serviceaccount", "default", check=False).returncode == 0,
        30,
        "the namespace's default ServiceAccount",
    )
    yield kubectl
    kubectl("delete", "namespace", NAMESPACE, "--wait=false", namespaced=False, check=False)


def pod(name: str, args: list[str], **spec: Any) -> dict[str, Any]:
    """A pod of the project's image, as the operator runs its workers."""
    container = {
        "name": "main",
        "image": IMAGE,
        "imagePullPolicy": "Never",
        "args": args,
        "securityContext": CONTAINER_SECURITY,
        **spec.pop("container", {}),
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": POD_SECURITY,
            "containers": [container],
            **spec,
        },
    }


def terminated(k: Kubectl, name: str, within: float = 60) -> dict[str, Any]:
    """The container's terminated state once the pod has ended."""

    def ended() -> dict[str, Any] | None:
        found = k.get("pod", name)
        if found["status"].get("phase") not in ("Succeeded", "Failed"):
            return None
        (status,) = found["status"]["containerStatuses"]
        return dict(status["state"]["terminated"])

    return wait_for(ended, within, f"pod {name} to end")


def running_pod(k: Kubectl, *selector: str, within: float = 60) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        for item in k.get("pods", *selector)["items"]:
            statuses = item["status"].get("containerStatuses") or []
            if statuses and all("running" in s["state"] for s in statuses):
                return dict(item)
        return None

    return wait_for(found, within, f"a running pod {' '.join(selector)}")


def ready_only_when_serving(k: Kubectl, port: int, within: float) -> None:
    """Follow the operator's pod until kopf's probe answers; fail if the
    pod is Ready before that. Ready is what `helm install --wait` and a
    rollout wait for: it must mean the operator has started. (Its container
    runs a second or two before kopf serves, so a pod without a readiness
    probe is Ready that long too early, and a few looks catch it.)"""

    def serving() -> bool:
        pods = k.get("pods", "-l", "app.kubernetes.io/component=operator")["items"]
        conditions = [c for p in pods for c in (p.get("status") or {}).get("conditions") or []]
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as ok:
                return bool(ok.status == 200)
        except OSError:
            assert not ready, "the operator's pod is Ready while its probe does not answer"
            return False

    wait_for(serving, within, "the operator's probe to answer")


def test_the_node_is_a_kubelet_on_containerd(node_cluster: Cluster, k: Kubectl) -> None:
    wide = k("get", "node", "-o", "wide", namespaced=False).stdout
    (row,) = wide.splitlines()[1:]
    assert row.split()[0] == real_node.NODE_NAME
    assert " Ready " in f" {row} "
    assert "containerd://" in row
    info = k.get("node", real_node.NODE_NAME)["status"]["nodeInfo"]
    assert info["kubeletVersion"] == "v1.34.4"
    assert info["containerRuntimeVersion"].startswith("containerd://")


def test_the_image_built_from_the_dockerfile_runs_the_cli(k: Kubectl) -> None:
    k.apply(pod("version", ["--version"]))
    state = terminated(k, "version")
    assert state["exitCode"] == 0
    # kubectl logs: the API server streams it from kubelet.
    assert k("logs", "version").stdout.split()[-1] == __version__


def test_a_worker_with_bad_configuration_exits_64_and_says_why(k: Kubectl) -> None:
    k.apply(pod("bad-worker", ["worker"]))
    state = terminated(k, "bad-worker")
    assert state["exitCode"] == 64
    # kubectl logs shows why, naming the variable the pod lacks.
    assert (
        "bad configuration: PROXYREFRESH_RUN_ID: Field required" in k("logs", "bad-worker").stdout
    )


def test_the_ui_serves_from_the_image_with_a_kubelet_mounted_token(
    node_cluster: Cluster, k: Kubectl, bed: Bed
) -> None:
    redis = RedisServer(bed.testbed)
    try:
        k("create", "serviceaccount", "ui")
        k(
            "create",
            "role",
            "ui",
            "--verb=get,list,watch",
            "--resource=proxyrefreshes.proxyrefresh.dev,proxypools.proxyrefresh.dev",
        )
        k("create", "rolebinding", "ui", "--role=ui", f"--serviceaccount={NAMESPACE}:ui")
        port = free_port("127.0.0.1")
        api = node_cluster.server.removeprefix("https://")
        host, _, api_port = api.partition(":")
        manifest = pod(
            "ui",
            ["ui", "--listen", f"127.0.0.1:{port}", "-n", NAMESPACE],
            hostNetwork=True,
            serviceAccountName="ui",
            automountServiceAccountToken=True,
            container={
                "env": [
                    {"name": "PROXYREFRESH_REDIS_URL", "value": redis.url},
                    {"name": "KUBERNETES_SERVICE_HOST", "value": host},
                    {"name": "KUBERNETES_SERVICE_PORT", "value": api_port},
                ]
            },
        )
        k.apply(manifest)
        running_pod(k, "--field-selector", "metadata.name=ui")

        def page() -> str | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
                    return str(resp.read().decode())
            except OSError:
                return None

        html = wait_for(page, 30, "the ui's page")
        assert "proxyrefresh" in html.lower()
    finally:
        k("delete", "pod", "ui", "--grace-period=1", "--wait=false", check=False)
        redis.stop()


def test_no_packet_can_leave_a_pod_or_the_node(node_cluster: Cluster, k: Kubectl) -> None:
    """Route look-ups, nothing sent: a pod on the bridge reaches only its
    subnet; on the host the pod and service ranges are unreachable."""
    k.apply(
        pod(
            "bridged",
            ["-c", "import time; time.sleep(300)"],
            container={"command": ["python"]},
            terminationGracePeriodSeconds=1,
        )
    )
    found = running_pod(k, "--field-selector", "metadata.name=bridged")
    ip = found["status"]["podIP"]
    node = node_cluster.node
    assert ip.startswith(node.subnet.rsplit(".", 2)[0] + ".")
    pods = json.loads(node.crictl("pods", "--name", "bridged", "-o", "json").stdout)["items"]
    inspect = json.loads(node.crictl("inspectp", "-o", "json", pods[0]["id"]).stdout)
    pid = int(inspect["info"]["pid"])
    service = "10.0.0.1"  # the kubernetes Service's ClusterIP
    elsewhere = ["192.0.2.1", "169.254.169.254", "10.1.2.3", service, "2001:db8::1"]
    for address in elsewhere:
        assert real_node.route_get(address, pid).startswith("unreachable"), address
    # Its own subnet is there, on its own interface.
    assert "dev eth0" in real_node.route_get(ip.rsplit(".", 1)[0] + ".250", pid)
    for address in (service, "10.244.200.9"):
        assert real_node.route_get(address).startswith("unreachable"), address
    k("delete", "pod", "bridged", "--grace-period=1", "--wait=false")


@pytest.mark.timeout(420)
def test_a_refresh_runs_in_real_containers_through_a_kubelet_restart(
    node_cluster: Cluster, k: Kubectl, bed: Bed
) -> None:
    """The chart's operator and judge Deployments and the worker Job's pods,
    as real containers: UID 65532, a read-only root and no capabilities
    inside each, `kubectl logs` of a worker, and kubelet restarted while the
    workers check against the chart's judge."""
    redis = RedisServer(bed.testbed)
    live = [p.url for p in bed.proxies if p.expect is not None]
    judge_port = free_port("0.0.0.0")
    # The dead ones too: a listener that never answers holds its chunk's pod
    # for the whole timeout, long enough to restart kubelet under it.
    candidates = [p.url for p in bed.proxies]
    api = node_cluster.server.removeprefix("https://")
    probe_port = free_port("0.0.0.0")
    values = {
        "image": {"repository": "proxyrefresh", "tag": "dev", "pullPolicy": "Never"},
        "hostNetwork": {"enabled": True, "apiServer": api},
        "redis": {"url": redis.url},
        # The chart's listeners take every address of the node: free on all
        # of them (the test bed holds ports on other loopback addresses).
        "operator": {"livenessPort": probe_port},
        "metrics": {"port": free_port("0.0.0.0")},
        "network": {"allowedNetworks": ["127.0.0.0/8"]},
        # The chart's judge, on the node's network: the proxies reach it there.
        "judge": {"enabled": True, "port": judge_port},
    }
    values_file = bed.testbed.workdir / "node-values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    try:
        helm(node_cluster, "install", "prf", str(CHART), "-n", NAMESPACE, "-f", str(values_file))
        ready_only_when_serving(k, probe_port, within=90)
        operator = running_pod(k, "-l", "app.kubernetes.io/component=operator", within=90)
        assert_confined(k, operator["metadata"]["name"])
        judge = running_pod(k, "-l", "app.kubernetes.io/component=judge", within=60)
        assert_confined(k, judge["metadata"]["name"])
        refresh = {
            "apiVersion": "proxyrefresh.dev/v1alpha1",
            "kind": "ProxyRefresh",
            "metadata": {"name": "real"},
            "spec": {
                "pool": "real",
                "sources": [{"inline": candidates}],
                "chunkSize": 1,
                "parallelism": 4,
                "checker": {"judges": [f"http://127.0.0.1:{judge_port}/"], "timeoutSeconds": 15},
            },
        }
        applied = time.monotonic()
        k.apply(refresh)
        running_pod(k, "-l", "app.kubernetes.io/component=worker", within=90)
        first_running = time.monotonic() - applied
        assert_a_running_worker_confined(k)
        # kubelet goes away and comes back while the workers run.
        node_cluster.restart_kubelet()

        def complete() -> dict[str, Any] | None:
            status = k.get("proxyrefresh", "real").get("status") or {}
            return status if status.get("phase") in ("Complete", "Failed") else None

        status = wait_for(complete, 180, "the refresh to end")
        assert status["phase"] == "Complete", status
        n = len(candidates)
        assert (status["candidates"], status["totalChunks"]) == (n, n)
        assert (status["completedChunks"], status["checked"]) == (n, n)
        assert status["live"] == len(live)
        wanted = [p for p in bed.proxies if p.expect and p.expect.value != "transparent"]
        assert status["usable"] == len(wanted)
        # What a worker printed, through kubelet.
        pods = k.get("pods", "-l", "app.kubernetes.io/component=worker")["items"]
        logs = k("logs", pods[0]["metadata"]["name"]).stdout
        assert logs.strip(), "a worker's log is empty"
        print(f"kubectl apply to the first worker Running: {first_running:.2f}s")
    except (WaitTimeout, AssertionError) as exc:
        raise AssertionError(f"{exc}\n{what_ran(node_cluster, k)}") from None
    finally:
        helm(node_cluster, "uninstall", "prf", "-n", NAMESPACE, "--wait", check=False)
        redis.stop()


def assert_confined(k: Kubectl, pod_name: str) -> None:
    """Inside the running container: UID 65532, a read-only root, no capabilities."""
    probe = k(
        "exec",
        pod_name,
        "--",
        "python",
        "-c",
        "import os\n"
        "print(os.getuid(), os.getgid())\n"
        "try:\n    open('/probe', 'w')\nexcept OSError as e:\n    print(e.strerror)\n"
        "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('CapEff')][0])",
    ).stdout.splitlines()
    assert probe == ["65532 65532", "Read-only file system", "0000000000000000"], probe


# What kubectl exec says of a container that ended after it was seen Running
# (137: the probe was killed with it, its chunk done while the probe ran).
ENDED = (
    "container not found",
    "completed pod",
    "is not running",
    "NotFound",
    "command terminated with exit code 137",
)


def assert_a_running_worker_confined(k: Kubectl) -> None:
    """assert_confined inside a worker that runs. A live proxy's chunk takes
    milliseconds, so a worker seen Running may be gone by the exec: then
    another that still runs (a black-holed proxy's holds its pod for the
    checker's whole timeout) is looked inside instead."""

    def probe() -> bool | None:
        pod = running_pod(k, "-l", "app.kubernetes.io/component=worker", within=30)
        try:
            assert_confined(k, pod["metadata"]["name"])
        except AssertionError as exc:
            if any(said in str(exc) for said in ENDED):
                return None
            raise
        return True

    wait_for(probe, 90, "a running worker to look inside")


def test_nothing_was_pulled(node_cluster: Cluster) -> None:
    """Last in the module (the session's end checks it again): containerd
    never asked a registry for an image."""
    assert real_node.pull_attempts(node_cluster.node.containerd_log) == []
