"""``proxyrefresh operator`` as a Deployment on the local node: the project's
image in a real container, under the chart's securityContext, killable and
restartable like a crashed or rescheduled operator pod.

Unlike the chart's install (tests/e2e/test_chart.py and test_real_node.py
hold that one to least privilege), a test's operator watches namespaces by
pattern (``t-*``), so it gets cluster-admin, as the admin kubeconfig gave the
local process it replaces. It uses the node's network: the test bed, Redis
and the API server are on the host's loopback, and there is no kube-proxy
for the ``kubernetes`` Service.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from proxyrefresh.fanout.job import CONTAINER_SECURITY, POD_SECURITY
from tests.harness.cluster import Cluster
from tests.harness.image import IMAGE
from tests.harness.kubectl import Kubectl
from tests.harness.scenario import operator_env
from tests.harness.testbed import free_port, healthy
from tests.harness.waiting import wait_until

NAMESPACE = "proxyrefresh-system"
CHART_VALUES = Path(__file__).resolve().parents[2] / "charts" / "proxyrefresh" / "values.yaml"


def chart_resources() -> dict[str, Any]:
    """The operator's requests and limits as the chart sets them: a test's
    operator lives under the same memory limit a user's does."""
    return dict(yaml.safe_load(CHART_VALUES.read_text())["operator"]["resources"])


class OperatorPod:
    """One operator Deployment named ``name`` in NAMESPACE."""

    def __init__(self, cluster: Cluster, redis_url: str, name: str, **env: str) -> None:
        self.cluster = cluster
        self.name = name
        self.port = free_port("127.0.0.1")
        self.metrics_port = free_port("127.0.0.1")
        settings = operator_env(redis_url, self.port, self.metrics_port, **env)
        # What a CLI command run by a test next to this operator needs.
        self.env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), **settings}
        self.kubectl = Kubectl(cluster.kubeconfig, NAMESPACE)
        self._settings = settings

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def manifests(self) -> list[dict[str, Any]]:
        host, _, port = self.cluster.server.removeprefix("https://").partition(":")
        env: list[dict[str, Any]] = [
            {"name": k, "value": v} for k, v in sorted(self._settings.items())
        ]
        env += [
            # No kube-proxy here: the API server where the node reaches it.
            {"name": "KUBERNETES_SERVICE_HOST", "value": host},
            {"name": "KUBERNETES_SERVICE_PORT", "value": port},
            {"name": "POD_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ]
        labels = {"app.kubernetes.io/name": "proxyrefresh", "operator": self.name}
        return [
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": self.name}},
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": f"{NAMESPACE}-{self.name}"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "cluster-admin",
                },
                "subjects": [{"kind": "ServiceAccount", "name": self.name, "namespace": NAMESPACE}],
            },
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": self.name, "labels": labels},
                "spec": {
                    "replicas": 1,
                    "strategy": {"type": "Recreate"},
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "serviceAccountName": self.name,
                            "hostNetwork": True,
                            "dnsPolicy": "ClusterFirstWithHostNet",
                            "securityContext": POD_SECURITY,
                            "terminationGracePeriodSeconds": 10,
                            "containers": [
                                {
                                    "name": "operator",
                                    "image": IMAGE,
                                    "imagePullPolicy": "Never",
                                    "args": ["operator"],
                                    "env": env,
                                    "resources": chart_resources(),
                                    "securityContext": CONTAINER_SECURITY,
                                }
                            ],
                        },
                    },
                },
            },
        ]

    def start(self, timeout: float = 90) -> None:
        """Run one replica and return once its liveness endpoint answers."""
        k = self.kubectl
        k("create", "namespace", NAMESPACE, namespaced=False, check=False)
        k.apply({"apiVersion": "v1", "kind": "List", "items": self.manifests()})
        k("scale", f"deployment/{self.name}", "--replicas=1")

        def crashed() -> str | None:
            for pod in self.pods():
                for status in pod["status"].get("containerStatuses") or []:
                    waiting = status["state"].get("waiting") or {}
                    if waiting.get("reason") in ("CrashLoopBackOff", "ErrImageNeverPull"):
                        return f"{waiting['reason']}: {self.logs(previous=True)}"
            return None

        what = f"the operator pod {self.name} alive on 127.0.0.1:{self.port}"
        wait_until(lambda: healthy(self.port), timeout, what, gone=crashed, interval=0.1)

    def stop(self, kill: bool = False) -> None:
        """No replica; ``kill``: its container is killed at once (SIGKILL), as
        a node failure or an OOM kill would, instead of told to stop."""
        k = self.kubectl
        k("scale", f"deployment/{self.name}", "--replicas=0", check=False)
        if kill:
            k("delete", "pods", "-l", f"operator={self.name}", "--grace-period=0", "--force")
        wait_until(lambda: not self.pods(), 60, f"the operator pod {self.name} gone")

    def restart(self) -> None:
        self.stop()
        self.start()

    def delete(self) -> None:
        self.stop()
        for item in reversed(self.manifests()):
            kind, name = item["kind"].lower(), item["metadata"]["name"]
            namespaced = kind != "clusterrolebinding"
            self.kubectl("delete", kind, name, namespaced=namespaced, check=False)

    def restarts(self) -> int:
        """How often its containers restarted (an OOM kill among them)."""
        return sum(
            int(status.get("restartCount") or 0)
            for pod in self.pods()
            for status in pod["status"].get("containerStatuses") or []
        )

    def pods(self) -> list[dict[str, Any]]:
        listing = self.kubectl("get", "pods", "-l", f"operator={self.name}", "-o", "json")
        return list(json.loads(listing.stdout)["items"])

    def logs(self, previous: bool = False) -> str:
        """What the operator's container printed (the one before, ``previous``)."""
        found = self.kubectl(
            "logs",
            f"deployment/{self.name}",
            *(["--previous"] if previous else []),
            "--tail=-1",
            check=False,
        )
        return found.stdout + found.stderr
