"""The local control plane behaves like a cluster: real controllers, a real
scheduler and a real kubelet that runs, fails, retries, deletes and
authorises pods as containers (busybox and kubectl in the harness's toolbox
image, hack/image.sh)."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.harness.cluster import Cluster
from tests.harness.image import TOOLBOX
from tests.harness.kubectl import Kubectl

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", autouse=True)
def cronjob(cluster: Cluster) -> Iterator[tuple[Kubectl, float]]:
    """A CronJob made when this module starts: its first run is up to a
    minute away, and the other tests here run meanwhile, so the last test
    waits only for what is left of that minute."""
    k = Kubectl(cluster.kubeconfig, f"cron-{uuid.uuid4().hex[:8]}")
    k("create", "namespace", k.namespace, namespaced=False)
    k.apply(
        {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {"name": "every-minute"},
            "spec": {
                "schedule": "* * * * *",
                "jobTemplate": {
                    "spec": {
                        "template": {
                            "spec": {
                                "restartPolicy": "Never",
                                "containers": [
                                    {"name": "main", "image": TOOLBOX, "command": ["true"]}
                                ],
                            }
                        }
                    }
                },
            },
        }
    )
    yield k, time.monotonic()
    k("delete", "namespace", k.namespace, "--wait=false", namespaced=False, check=False)


def shared(path: Path) -> dict[str, Any]:
    """Pod spec fields that mount the host's ``path`` at the same place."""
    return {
        "volumes": [{"name": "shared", "hostPath": {"path": str(path), "type": "Directory"}}],
        "containers": [{"volumeMounts": [{"name": "shared", "mountPath": str(path)}]}],
    }


def job(name: str, script: str, mount: Path | None = None, **spec: Any) -> dict[str, Any]:
    """An Indexed Job of toolbox pods running ``script`` (with ``mount``
    shared with the host)."""
    container: dict[str, Any] = {"name": "main", "image": TOOLBOX, "command": ["sh", "-c", script]}
    pod_spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    if mount is not None:
        extra = shared(mount)
        pod_spec["volumes"] = extra["volumes"]
        container["volumeMounts"] = extra["containers"][0]["volumeMounts"]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"completionMode": "Indexed", **spec, "template": {"spec": pod_spec}},
    }


def pod(
    name: str, script: str, labels: dict[str, str] | None = None, **container: Any
) -> dict[str, Any]:
    """A one-container toolbox pod running ``script`` (more container fields
    in ``container``; ``grace`` sets terminationGracePeriodSeconds)."""
    spec: dict[str, Any] = {"restartPolicy": "Never"}
    if "grace" in container:
        spec["terminationGracePeriodSeconds"] = container.pop("grace")
    spec["containers"] = [
        {"name": "main", "image": TOOLBOX, "command": ["sh", "-c", script], **container}
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": spec,
    }


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in obj.get("status", {}).get("conditions", []):
        if cond["type"] == kind and cond["status"] == "True":
            return dict(cond)
    return None


def test_indexed_job_completes_every_index(kubectl: Kubectl, tmp_path: Path) -> None:
    tmp_path.chmod(0o777)
    script = f"echo $JOB_COMPLETION_INDEX > {tmp_path}/index-$JOB_COMPLETION_INDEX"
    kubectl.apply(job("six", script, tmp_path, completions=6, parallelism=2))
    kubectl("wait", "--for=condition=Complete", "job/six", "--timeout=90s")
    status = kubectl.get("job", "six")["status"]
    assert status["completedIndexes"] == "0-5"
    assert status["succeeded"] == 6
    assert sorted(p.read_text().strip() for p in tmp_path.glob("index-*")) == [
        str(i) for i in range(6)
    ]


def test_failed_index_is_retried_and_a_hopeless_one_fails_the_job(
    kubectl: Kubectl, tmp_path: Path
) -> None:
    tmp_path.chmod(0o777)
    # index 0 fails on its first attempt only; index 1 always fails.
    script = (
        f'if [ "$JOB_COMPLETION_INDEX" = 1 ]; then exit 3; fi; '
        f"m={tmp_path}/tried-$JOB_COMPLETION_INDEX; "
        'if [ -e "$m" ]; then exit 0; fi; touch "$m"; exit 1'
    )
    kubectl.apply(
        job("flaky", script, tmp_path, completions=2, parallelism=2, backoffLimitPerIndex=1)
    )
    kubectl("wait", "--for=condition=Failed", "job/flaky", "--timeout=120s")
    status = kubectl.get("job", "flaky")["status"]
    assert status["completedIndexes"] == "0"
    assert status["failedIndexes"] == "1"
    assert condition(kubectl.get("job", "flaky"), "Failed")["reason"] == "FailedIndexes"  # type: ignore[index]
    pods = kubectl.get("pods", "-l", "job-name=flaky")["items"]
    exit_codes = sorted(
        p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] for p in pods
    )
    assert exit_codes == [0, 1, 3, 3]  # index 0: fail, retry ok; index 1: fail twice


def test_pod_deleted_mid_run_is_killed_within_its_grace_period(kubectl: Kubectl) -> None:
    # Ignores SIGTERM, so only the SIGKILL after the grace period ends it.
    script = "trap '' TERM; echo started; while true; do sleep 0.2; done"
    kubectl.apply(pod("sleeper", script, grace=3))
    kubectl("wait", "--for=condition=Ready", "pod/sleeper", "--timeout=60s")
    started = time.monotonic()
    kubectl("delete", "pod", "sleeper", "--wait=true", "--timeout=30s")
    # kubelet confirms the deletion once the container is gone: after the
    # grace period (SIGKILL), not before it and not much after.
    assert 2.5 < time.monotonic() - started < 8


def test_active_deadline_fails_the_pod(kubectl: Kubectl) -> None:
    spec = job("late", "sleep 30", completions=1, backoffLimitPerIndex=0)
    spec["spec"]["template"]["spec"]["activeDeadlineSeconds"] = 2
    # sh as PID 1 ignores SIGTERM: only the kill after the grace period ends it.
    spec["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 1
    kubectl.apply(spec)
    kubectl("wait", "--for=condition=Failed", "job/late", "--timeout=60s")
    (pod,) = kubectl.get("pods", "-l", "job-name=late")["items"]
    assert pod["status"]["phase"] == "Failed"
    assert pod["status"]["reason"] == "DeadlineExceeded"


def test_deployment_gets_its_pod_running(kubectl: Kubectl, cluster: Cluster) -> None:
    kubectl.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "main",
                                "image": TOOLBOX,
                                "command": ["sh", "-c", "sleep 3600"],
                            }
                        ]
                    },
                },
            },
        }
    )
    kubectl("rollout", "status", "deployment/web", "--timeout=60s")
    (pod,) = kubectl.get("pods", "-l", "app=web")["items"]
    assert pod["status"]["phase"] == "Running"
    assert pod["spec"]["nodeName"] == cluster.node_name  # placed by kube-scheduler


def test_env_is_resolved_like_a_kubelet(kubectl: Kubectl) -> None:
    kubectl("create", "configmap", "cfg", "--from-literal=colour=blue")
    kubectl("create", "secret", "generic", "sec", "--from-literal=password=hunter2")
    env = [
        {"name": "GREETING", "value": "hello"},
        {"name": "COLOUR", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "colour"}}},
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "password"}}},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "TEAM", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['team']"}}},
    ]
    kubectl.apply(
        pod(
            "envy",
            "echo $(GREETING) $COLOUR $PASSWORD $POD $TEAM $X_colour",
            labels={"team": "proxies"},
            envFrom=[{"configMapRef": {"name": "cfg"}, "prefix": "X_"}],
            env=env,
        )
    )
    kubectl("wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/envy", "--timeout=60s")
    assert "hello blue hunter2 envy proxies blue" in kubectl("logs", "envy").stdout


def test_service_account_rbac_is_real(kubectl: Kubectl, cluster: Cluster) -> None:
    ns = kubectl.namespace
    kubectl("create", "serviceaccount", "reader")
    kubectl("create", "role", "cm-reader", "--verb=get,list", "--resource=configmaps")
    kubectl(
        "create", "rolebinding", "cm-reader", "--role=cm-reader", f"--serviceaccount={ns}:reader"
    )
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "probe"},
            "spec": {
                "serviceAccountName": "reader",
                "restartPolicy": "Never",
                # The API server is on the host's loopback: the node's network,
                # and its address instead of the Service's (no kube-proxy here).
                "hostNetwork": True,
                "containers": [
                    {
                        "name": "main",
                        "image": TOOLBOX,
                        "env": api_server_env(cluster),
                        "command": [
                            "sh",
                            "-c",
                            "kubectl get configmaps -o name; echo cm=$?; "
                            "kubectl get secrets; echo secrets=$?",
                        ],
                    }
                ],
            },
        }
    )
    kubectl("wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/probe", "--timeout=60s")
    logs = kubectl("logs", "probe").stdout
    assert "configmap/kube-root-ca.crt" in logs
    assert "cm=0" in logs
    assert f'User "system:serviceaccount:{ns}:reader" cannot list resource "secrets"' in logs
    assert "secrets=1" in logs


def api_server_env(cluster: Cluster) -> list[dict[str, str]]:
    host, _, port = cluster.server.removeprefix("https://").partition(":")
    return [
        {"name": "KUBERNETES_SERVICE_HOST", "value": host},
        {"name": "KUBERNETES_SERVICE_PORT", "value": port},
    ]


def test_kubectl_get_watch_streams_changes(kubectl: Kubectl) -> None:
    proc = subprocess.Popen(
        [*kubectl.argv(), "get", "configmaps", "-w", "-o", "name"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        kubectl("create", "configmap", "watched", "--from-literal=a=1")
        stdout = proc.stdout
        assert stdout is not None

        def next_watched() -> str | None:
            line = stdout.readline()  # kubectl -w prints a line per event
            return line if "watched" in line else None

        seen = wait_for(next_watched, 30, "kubectl get -w to print the new ConfigMap")
        assert seen.strip() == "configmap/watched"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_cronjob_creates_a_job_within_70_seconds(cronjob: tuple[Kubectl, float]) -> None:
    k, created = cronjob  # last in this module: the CronJob was made at its start
    wait_for(lambda: k.get("jobs")["items"], 70 - (time.monotonic() - created), "its first Job")
    print(f"CronJob created a Job {time.monotonic() - created:.1f}s after it was made")
