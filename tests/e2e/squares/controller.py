"""The Square controller: a kopf operator of a few dozen lines that fans its
work out through the same core as ProxyRefresh (``kopf run`` this file).

Step by step, once a second: write the chunks and the run's Redis user and
Secret and create the Indexed Job; then follow the run's progress; when the
Job ends, merge the squares into a ConfigMap and delete the Redis user."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import kopf
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from redis.asyncio import Redis

from proxyrefresh.fanout import access
from proxyrefresh.fanout import job as fanout_job
from proxyrefresh.fanout.store import RunStore
from tests.e2e.squares.kind import CONTAINER, GROUP, PLURAL, PREFIX, VERSION

ROOT = Path(__file__).resolve().parents[3]
# Where the pods find this kind's code: a copy the test made readable to
# the pods' user (the checkout itself may be a directory only root enters).
CODE = Path(os.environ.get("SQUARES_CODE") or ROOT)
REDIS_URL = os.environ["SQUARES_REDIS_URL"]


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


def start(body: Any, redis_url: str) -> int:
    """Chunks are written by the caller; the Secret and the Job here."""
    meta, spec = body["metadata"], body["spec"]
    name, namespace, uid = meta["name"], meta["namespace"], meta["uid"]
    owner = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Square", "name": name, "uid": uid}
    secret = f"{name}-{uid[:8]}-redis"
    create(
        client.CoreV1Api().create_namespaced_secret,
        namespace,
        {
            "metadata": {"name": secret, "ownerReferences": [owner]},
            "stringData": {"url": redis_url},
        },
    )
    chunks = -(-len(spec["numbers"]) // spec["chunkSize"])
    env = [
        {"name": "SQUARES_RUN_ID", "value": uid},
        {"name": "PYTHONPATH", "value": str(CODE)},
        {"name": "SQUARES_CRASH_ONCE", "value": os.environ.get("SQUARES_CRASH_ONCE", "")},
        {
            "name": "SQUARES_REDIS_URL",
            "valueFrom": {"secretKeyRef": {"name": secret, "key": "url"}},
        },
    ]
    # The project's image runs this kind's worker from its code, mounted
    # read-only where it is on the host (and the crash marker's directory,
    # writable); on the node's network, where the test's Redis listens.
    mounts = {"src": (CODE, True)}
    marker = os.environ.get("SQUARES_CRASH_ONCE")
    if marker:
        mounts["marker"] = (Path(marker).parent, False)
    manifest = fanout_job.indexed_job(
        name=f"{name}-{uid[:8]}",
        namespace=namespace,
        labels={"app": "squares", f"{GROUP}/name": name},
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
    return int(chunks)


def merge(namespace: str, name: str, squares: list[int]) -> None:
    body = {"metadata": {"name": f"{name}-squares"}, "data": {"squares": json.dumps(squares)}}
    create(client.CoreV1Api().create_namespaced_config_map, namespace, body)


def unfinished(status: kopf.Status, **_: Any) -> bool:
    return status.get("phase") != "Done"


@kopf.timer(GROUP, VERSION, PLURAL, interval=1.0, when=unfinished)
async def step(body: kopf.Body, status: kopf.Status, patch: kopf.Patch, **_: Any) -> None:
    meta = body["metadata"]
    uid, namespace, name = meta["uid"], meta["namespace"], meta["name"]
    redis = Redis.from_url(REDIS_URL, decode_responses=True)
    store = RunStore(redis, uid, prefix=PREFIX)
    try:
        if not status.get("phase"):
            numbers, size = list(body["spec"]["numbers"]), int(body["spec"]["chunkSize"])
            await store.write_chunks([numbers[i : i + size] for i in range(0, len(numbers), size)])
            await access.grant(redis, uid, REDIS_URL, PREFIX)
            chunks = start(body, access.run_url(REDIS_URL, uid, REDIS_URL))
            patch.status.update(phase="Running", totalChunks=chunks)
            return
        job = client.BatchV1Api().read_namespaced_job(f"{name}-{uid[:8]}", namespace)
        job = client.ApiClient().sanitize_for_serialization(job)
        progress = await store.progress()
        patch.status.update(
            completedChunks=progress.completed_chunks,
            processed=progress.processed,
            succeeded=progress.succeeded,
        )
        end = fanout_job.job_end(job)
        if end.finished:
            results = await store.read_results()
            squares = sorted(o.value["square"] for r in results.values() for o in r.outcomes)
            merge(namespace, name, squares)
            await access.revoke(redis, uid)
            patch.status.update(phase="Done", jobSucceeded=end.succeeded)
    finally:
        await redis.aclose()
