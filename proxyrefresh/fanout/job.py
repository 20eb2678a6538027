"""The Indexed Job of a fan-out run, and what its status says: pure.

One pod per chunk (``JOB_COMPLETION_INDEX`` is the chunk), retried per
index, failed at once on the exit codes that say a retry cannot help
(``fanout.exits``), never blamed for an eviction. While more chunks wait
than run, up to ``ready_pods`` more pods run, waiting for a slot
(``fanout.slots``); their hard deadline has room for that one wait. The
caller brings the container (image, command, env) and the labels;
everything else a fan-out needs is here, so a second kind of run builds
its Job the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proxyrefresh.fanout.exits import EXIT_CONFIG, EXIT_STATE_LOST

# The pod's security context: workers run non-root, need no API access.
POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


def indexed_job(
    *,
    name: str,
    namespace: str,
    labels: dict[str, str],
    container: dict[str, Any],
    chunks: int,
    parallelism: int,
    backoff_limit_per_index: int,
    max_failed_indexes: int | None,
    chunk_seconds: int,
    ttl_seconds: int,
    service_account: str | None = None,
    ready_pods: int = 0,
    slots_env: str | None = None,
    host_network: bool = False,
) -> dict[str, Any]:
    """The Job for ``chunks`` chunks; ``container`` is completed with the
    security context every fan-out pod runs with."""
    container = {"securityContext": CONTAINER_SECURITY, **container}
    pods = min(parallelism + max(0, ready_pods), chunks)
    gated = pods > parallelism
    if gated:
        if slots_env is None:
            raise ValueError("pods ahead of their slot need slots_env: the variable they read")
        env = [{"name": slots_env, "value": str(parallelism)}]
        container["env"] = [*container.get("env", []), *env]
    # The pod's hard deadline; the runtime stops itself before it (a pod
    # started ahead may first wait as long for its slot).
    deadline = chunk_seconds * (2 if gated else 1)
    spec: dict[str, Any] = {
        "completionMode": "Indexed",
        "completions": chunks,
        "parallelism": pods,
        "backoffLimitPerIndex": backoff_limit_per_index,
        "podFailurePolicy": pod_failure_policy(container["name"]),
        "ttlSecondsAfterFinished": ttl_seconds,
        "template": {
            "metadata": {"labels": labels},
            "spec": pod_spec(container, deadline, service_account, host_network),
        },
    }
    if max_failed_indexes is not None:
        # The Job API refuses more than its completions: clamped.
        spec["maxFailedIndexes"] = min(max_failed_indexes, chunks)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": spec,
    }


def pod_spec(
    container: dict[str, Any], deadline: int, service_account: str | None, host_network: bool
) -> dict[str, Any]:
    """A fan-out pod: never restarted in place (the Job retries the index),
    no API token, no service links, non-root."""
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "activeDeadlineSeconds": deadline,
        "terminationGracePeriodSeconds": 30,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": POD_SECURITY,
        "containers": [container],
    }
    if service_account:
        spec["serviceAccountName"] = service_account
    if host_network:
        # The node's network; names still resolve through the cluster's DNS.
        spec["hostNetwork"] = True
        spec["dnsPolicy"] = "ClusterFirstWithHostNet"
    return spec


def pod_failure_policy(container_name: str) -> dict[str, Any]:
    return {
        "rules": [
            # The pod's own word that a retry cannot help: fail at once.
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": container_name,
                    "operator": "In",
                    "values": [EXIT_CONFIG, EXIT_STATE_LOST],
                },
            },
            # A pod evicted or preempted is not the chunk's fault.
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
        ]
    }


def worker_secret(
    name: str,
    namespace: str,
    url: str,
    owner: dict[str, Any],
    labels: dict[str, str],
    key: str = "url",
) -> dict[str, Any]:
    """The Secret that hands a run's workers their Redis URL (the run's own
    user, fanout.control.Run.worker_url), owned by the run's resource: the
    Job's spec only references it, so reading the Job shows no password."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [owner],
        },
        "stringData": {key: url},
    }


def secret_env(variable: str, secret: str, key: str = "url") -> dict[str, Any]:
    """The env entry that reads ``variable`` from the run's Secret."""
    return {"name": variable, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def failed_indexes(job: dict[str, Any] | None) -> int:
    """How many indexes the Job gave up on ("1,3-5" -> 4)."""
    text = ((job or {}).get("status") or {}).get("failedIndexes") or ""
    count = 0
    for part in filter(None, text.split(",")):
        low, _, high = part.partition("-")
        count += int(high or low) - int(low) + 1
    return count


@dataclass(frozen=True)
class JobEnd:
    """What the Job's final condition says, if it has one."""

    finished: bool
    succeeded: bool = False
    reason: str = ""
    message: str = ""


def job_end(job: dict[str, Any] | None) -> JobEnd:
    for cond in ((job or {}).get("status") or {}).get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") == "Complete":
            return JobEnd(True, True, cond.get("reason") or "Completed", cond.get("message") or "")
        if cond.get("type") == "Failed":
            return JobEnd(True, False, cond.get("reason") or "JobFailed", cond.get("message") or "")
    return JobEnd(False)


def active_pods(job: dict[str, Any] | None) -> int:
    return int(((job or {}).get("status") or {}).get("active") or 0)
