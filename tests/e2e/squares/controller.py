"""The Square controller: a kopf operator of a few dozen lines that fans its
work out through the same core as ProxyRefresh (``kopf run`` this file),
using only the names ``proxyrefresh.fanout`` exports.

Step by step, once a second: write the chunks, the run's Redis user and
Secret, and create the Indexed Job; then follow the run (its keys kept
alive, Failed with reason StateLost if Redis loses them); when the Job
ends, merge the squares into a ConfigMap and take the Redis user away."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import kopf
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from redis.asyncio import Redis

from proxyrefresh.fanout import (
    Run,
    StateLost,
    chunked,
    indexed_job,
    job_end,
    secret_env,
    worker_secret,
)
from tests.e2e.squares.kind import CONTAINER, GROUP, PLURAL, SQUARES, VERSION, job_name

ROOT = Path(__file__).resolve().parents[3]
# Where the pods find this kind's code: a copy the test made readable to
# the pods' user (the checkout itself may be a directory only root enters).
CODE = Path(os.environ.get("SQUARES_CODE") or ROOT)
REDIS_URL = os.environ["SQUARES_REDIS_URL"]
KEY_TTL = int(os.environ.get("SQUARES_KEY_TTL") or 3600)  # kept alive while followed


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    config.load_kube_config()
    settings.scanning.disabled = True
    settings.posting.enabled = False


def create(call: Any, *args: Any) -> None:
    """Create if missing: a repeated step finds it there."""
    try:
        call(*args)
    except ApiException as exc:
        if exc.status != 409:
            raise


def start(body: Any, worker_url: str, chunks: int) -> None:
    """The run's Secret and its Job; the chunks are written by the caller."""
    meta, spec = body["metadata"], body["spec"]
    name, namespace, uid = meta["name"], meta["namespace"], meta["uid"]
    owner = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Square", "name": name, "uid": uid}
    job = job_name(name, uid)
    labels = {"app": "squares", f"{GROUP}/name": name}
    secret = worker_secret(f"{job}-redis", namespace, worker_url, owner, labels)
    create(client.CoreV1Api().create_namespaced_secret, namespace, secret)
    env = [
        {"name": "SQUARES_RUN_ID", "value": uid},
        {"name": "PYTHONPATH", "value": str(CODE)},
        {"name": "SQUARES_CRASH_ONCE", "value": os.environ.get("SQUARES_CRASH_ONCE", "")},
        {"name": "SQUARES_SLOW", "value": str(spec.get("slowSeconds") or 0)},
        {"name": "SQUARES_KEY_TTL", "value": str(KEY_TTL)},
        secret_env("SQUARES_REDIS_URL", f"{job}-redis"),
    ]
    # The project's image runs this kind's worker from its code, mounted
    # read-only where it is on the host (and the crash marker's directory,
    # writable); on the node's network, where the test's Redis listens.
    mounts = {"src": (CODE, True)}
    marker = os.environ.get("SQUARES_CRASH_ONCE")
    if marker:
        mounts["marker"] = (Path(marker).parent, False)
    manifest = indexed_job(
        name=job,
        namespace=namespace,
        labels=labels,
        container={
            "name": CONTAINER,
            "image": "proxyrefresh:dev",
            "imagePullPolicy": "Never",
            "command": ["python", "-m", "tests.e2e.squares.worker"],
            "workingDir": str(CODE),
            "env": env,
            "volumeMounts": [
                {"name": n, "mountPath": str(path), "readOnly": ro}
                for n, (path, ro) in mounts.items()
            ],
        },
        chunks=chunks,
        parallelism=2,
        backoff_limit_per_index=2,
        max_failed_indexes=None,
        chunk_seconds=60,
        ttl_seconds=600,
        host_network=True,
    )
    manifest["spec"]["template"]["spec"]["volumes"] = [
        {"name": n, "hostPath": {"path": str(path), "type": "Directory"}}
        for n, (path, _) in mounts.items()
    ]
    manifest["metadata"]["ownerReferences"] = [owner]
    create(client.BatchV1Api().create_namespaced_job, namespace, manifest)


def merge(namespace: str, name: str, squares: list[int]) -> None:
    body = {"metadata": {"name": f"{name}-squares"}, "data": {"squares": json.dumps(squares)}}
    create(client.CoreV1Api().create_namespaced_config_map, namespace, body)


def unfinished(status: kopf.Status, **_: Any) -> bool:
    return status.get("phase") not in ("Done", "Failed")


@kopf.timer(GROUP, VERSION, PLURAL, interval=1.0, when=unfinished)
async def step(body: kopf.Body, status: kopf.Status, patch: kopf.Patch, **_: Any) -> None:
    meta = body["metadata"]
    uid, namespace, name = meta["uid"], meta["namespace"], meta["name"]
    redis = Redis.from_url(REDIS_URL, decode_responses=True)
    run = Run(redis, SQUARES, uid, KEY_TTL)
    try:
        if not status.get("phase"):
            numbers, size = list(body["spec"]["numbers"]), int(body["spec"]["chunkSize"])
            chunks = await run.store.write_chunks(chunked(numbers, size))
            await run.grant(REDIS_URL)
            start(body, run.worker_url(REDIS_URL, REDIS_URL), chunks)
            patch.status.update(phase="Running", totalChunks=chunks)
            return
        try:
            progress = await run.follow()
        except StateLost as exc:
            client.BatchV1Api().delete_namespaced_job(
                job_name(name, uid), namespace, propagation_policy="Background"
            )
            await run.cleanup()
            patch.status.update(phase="Failed", reason="StateLost", message=str(exc))
            return
        patch.status.update(
            completedChunks=progress.completed_chunks,
            processed=progress.processed,
            succeeded=progress.succeeded,
        )
        job = client.BatchV1Api().read_namespaced_job(job_name(name, uid), namespace)
        end = job_end(client.ApiClient().sanitize_for_serialization(job))
        if end.finished:
            results = await run.store.read_results()
            squares = sorted(o.value["square"] for r in results.values() for o in r.outcomes)
            merge(namespace, name, squares)
            await run.revoke()
            patch.status.update(phase="Done", jobSucceeded=end.succeeded)
    finally:
        await redis.aclose()
