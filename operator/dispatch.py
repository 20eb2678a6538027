"""Fan-out: chunk the candidates and build the Indexed Job that checks them.

``build_job`` is a pure function of the refresh and the settings, so it is
tested by rendering it, with no cluster. The Job's name is derived from the
refresh, so creating it twice (an operator restarted mid-dispatch) finds the
first one instead of starting a second.
"""

from __future__ import annotations

from typing import Any

from proxyrefresh import constants as c
from proxyrefresh.api import ProxyRefreshSpec
from proxyrefresh.fanout import job as fanout_job
from proxyrefresh.operator.settings import OperatorSettings
from proxyrefresh.settings import (
    CheckerSettings,
    NetworkSettings,
    RedisSettings,
    WorkerSettings,
)


def job_name(refresh_name: str, uid: str) -> str:
    """Unique per refresh, stable across restarts, and short enough for the
    job-name label (63) with room for the Job controller's pod suffixes."""
    return f"{refresh_name[:40].rstrip('-')}-{uid[:8]}"


def redis_secret_name(job: str) -> str:
    """The Secret, in the Job's namespace, holding the URL its workers use."""
    return f"{job}-redis"


def labels(name: str, pool: str) -> dict[str, str]:
    return {
        c.LABEL_NAME: "proxyrefresh",
        c.LABEL_COMPONENT: "worker",
        c.LABEL_MANAGED_BY: c.MANAGED_BY,
        c.LABEL_REFRESH: name[:63],
        c.LABEL_POOL: pool,
    }


def redis_secret(
    job: str, namespace: str, url: str, owner: dict[str, Any], pool: str, refresh: str
) -> dict[str, Any]:
    """The run's Redis URL (its own ACL user, see fanout.access) as a Secret
    owned by the refresh: the Job's spec only references it."""
    return fanout_job.worker_secret(
        redis_secret_name(job), namespace, url, owner, labels(refresh, pool), c.REDIS_SECRET_KEY
    )


def worker_env(
    spec: ProxyRefreshSpec,
    uid: str,
    redis: RedisSettings,
    network: NetworkSettings,
    job: str,
) -> list[dict[str, Any]]:
    """A worker pod's environment, written by the settings classes the pod
    reads it with (EnvSettings.env_of): one contract, spelled once."""
    checker = spec.checker
    env: list[dict[str, Any]] = [
        *WorkerSettings.env_of(run_id=uid, chunk_seconds=spec.deadlines.chunk_seconds),
        *CheckerSettings.env_of(
            judges=checker.judges,
            timeout=checker.timeout_seconds,
            connect_timeout=checker.connect_timeout_seconds,
            concurrency=checker.concurrency,
            targets=checker.targets,
        ),
        *RedisSettings.env_of(key_ttl_seconds=redis.key_ttl_seconds),
        *network.env(),
    ]
    ca = redis.ca_pem()
    if ca is not None:  # TLS to Redis with a CA of one's own: the workers verify with it too
        env += RedisSettings.env_of(ca_data=ca)
    # Never the URL itself: anyone with `view` reads a Job's spec.
    url = RedisSettings.variable("url")
    env.append(fanout_job.secret_env(url, redis_secret_name(job), c.REDIS_SECRET_KEY))
    return env


def build_job(
    *,
    name: str,
    namespace: str,
    uid: str,
    spec: ProxyRefreshSpec,
    chunks: int,
    settings: OperatorSettings,
    redis: RedisSettings,
    network: NetworkSettings,
) -> dict[str, Any]:
    """The Indexed Job for one refresh: one pod per chunk, the proxy checker's
    container on the fan-out core's Job skeleton."""
    job = job_name(name, uid)
    return fanout_job.indexed_job(
        name=job,
        namespace=namespace,
        labels=labels(name, spec.pool),
        container={
            "name": c.WORKER_CONTAINER,
            "image": settings.worker_image,
            "imagePullPolicy": settings.worker_image_pull_policy,
            "args": ["worker"],
            "env": worker_env(spec, uid, redis, network, job),
            "resources": {
                "requests": {"cpu": "100m", "memory": "128Mi"},
                "limits": {"memory": "512Mi"},
            },
        },
        chunks=chunks,
        parallelism=spec.parallelism,
        ready_pods=spec.parallelism if spec.ready_pods is None else spec.ready_pods,
        slots_env=WorkerSettings.variable("slots"),
        backoff_limit_per_index=spec.retry.backoff_limit_per_index,
        max_failed_indexes=spec.retry.max_failed_indexes,
        chunk_seconds=spec.deadlines.chunk_seconds,
        ttl_seconds=settings.job_ttl_seconds,
        service_account=settings.worker_service_account,
        host_network=settings.worker_host_network,
    )
