"""The operator's own settings, from its environment (the chart sets these)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from proxyrefresh.settings import EnvSettings


class OperatorSettings(EnvSettings):
    """How the operator runs, from its environment (the chart sets these)."""

    env_prefix = "PROXYREFRESH_OPERATOR_"

    worker_image: str = "proxyrefresh:dev"
    worker_image_pull_policy: str = "IfNotPresent"
    worker_service_account: str | None = None  # None: the namespace's default
    # Worker pods on their node's network (hostNetwork) instead of the pod
    # network: for nodes whose pods cannot reach the judges, proxies or Redis
    # (the chart's hostNetwork.enabled; the test bed, which lives on loopback).
    worker_host_network: bool = False
    # Each run's workers get a Redis ACL user limited to the run's keys
    # (fanout.access); false hands them the operator's own URL (documented as
    # loosening the rules). The key their passwords derive from defaults to
    # the operator's Redis URL, which only the operator holds.
    worker_redis_acl: bool = True
    worker_credential_key: str | None = None
    # NAMESPACE/NAME of a Secret to keep the live page's read-only Redis
    # user's URL in (operator/viewer_access.py); none: no such user.
    viewer_secret: str | None = Field(
        default=None, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-.a-z0-9]*[a-z0-9])?$"
    )
    job_ttl_seconds: int = Field(default=3600, ge=0)
    keep_complete: int = Field(default=5, ge=0)
    keep_failed: int = Field(default=3, ge=0)
    source_timeout_seconds: float = Field(default=30.0, gt=0)
    source_retries: int = Field(default=3, ge=0)
    # What one refresh may make the operator hold (operator/scrape.py): each
    # source, all its sources together, its candidates; how many sources
    # are read at once; how often a scrape may die with the operator (out
    # of memory, say) before the refresh fails instead of trying again.
    source_max_bytes: int = Field(default=32 * 1024 * 1024, gt=0)
    scrape_max_bytes: int = Field(default=32 * 1024 * 1024, gt=0)
    max_candidates: int = Field(default=1_000_000, gt=0)
    namespace_max_candidates: int = Field(default=2_000_000, gt=0)  # unfinished runs together
    scrape_concurrency: int = Field(default=4, ge=1)
    scrape_crash_limit: int = Field(default=3, ge=1)
    # Refreshes scraping at once, in all and per namespace (operator/scrape_slots.py).
    concurrent_scrapes: int = Field(default=3, ge=1)
    namespace_scrapes: int = Field(default=1, ge=1)
    # No run starts while Redis holds more than this share of its maxmemory
    # (the refresh waits, saying so); a finished run's keys go this soon
    # after its merge.
    redis_high_water: float = Field(default=0.8, gt=0, le=1)
    finished_key_ttl_seconds: int = Field(default=600, ge=1)
    pool_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=60)
    liveness_endpoint: str = "http://0.0.0.0:8080/healthz"
    metrics_address: str = "0.0.0.0"
    metrics_port: int = Field(default=9090, ge=0, le=65535)  # /metrics; 0: none
    # text: one line each, logger names whole; json: one object a line, for
    # log pipelines (kopf's JSON, with the object each line is about).
    log_format: Literal["text", "json"] = "text"
    namespaces: list[str] = Field(default_factory=list)  # empty: all namespaces
