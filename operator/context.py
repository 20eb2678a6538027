"""What every refresh step needs, and the two ways a step gives up.

Built once at operator start-up (handlers.configure); a step that cannot
go on raises Refused (the refresh fails with that reason) or Unavailable
(Stalled, and the driver retries).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from proxyrefresh.api import Scoring
from proxyrefresh.constants import RUNS
from proxyrefresh.fanout.control import Run
from proxyrefresh.fanout.store import RunStore
from proxyrefresh.operator import memory, scrape
from proxyrefresh.operator.metrics import Metrics
from proxyrefresh.operator.scrape_slots import ScrapeSlots
from proxyrefresh.operator.scrape_tasks import ScrapeTasks
from proxyrefresh.operator.settings import OperatorSettings
from proxyrefresh.operator.subscriptions import Subscriptions
from proxyrefresh.operator.turns import PoolTurns
from proxyrefresh.pool import AsyncPool
from proxyrefresh.redact import redis_problem
from proxyrefresh.settings import NetworkSettings, RedisSettings


@dataclass
class Context:
    """What every step needs; built once at operator start-up."""

    settings: OperatorSettings
    redis_settings: RedisSettings
    redis: Redis
    network: NetworkSettings
    events: Any = None  # callable(reason, message, warning=False), set per call
    # Status patches sent by this operator (bench/refresh_e2e.py reads the log line).
    patches: Counter[str] = field(default_factory=Counter)
    metrics: Metrics = field(default_factory=Metrics)
    # Every refresh of a pool (or, for pool None, of the namespace), as
    # kopf's index has them (handlers.py); None (no kopf, as in the unit
    # tests): listed from the API.
    peers: Callable[[str, str | None], list[dict[str, Any]]] | None = None
    # The one pub/sub connection every refresh and pool follows its channel on.
    subscriptions: Subscriptions = field(kw_only=True)
    # How full Redis is (looked at once every few seconds, for every refresh).
    memory: memory.RedisMemory = field(kw_only=True)
    # How many refreshes scrape at once (each holds its sources in memory).
    scrape_slots: ScrapeSlots = field(kw_only=True)
    # Wakes the refreshes waiting for a pool when one of its refreshes ends.
    pool_turns: PoolTurns = field(kw_only=True)
    # The scrapes running beside their refreshes' loops.
    scrapes: ScrapeTasks = field(default_factory=ScrapeTasks, kw_only=True)
    # What runs for the operator's whole life (the viewer user's keeper).
    background: list[asyncio.Task[None]] = field(default_factory=list, kw_only=True)
    # This operator process, in a refresh's status while it scrapes it
    # (guard_scrape): a different one there means that one died scraping.
    process: str = field(default_factory=lambda: f"{socket.gethostname()}/{time.time_ns()}")

    def run(self, uid: str) -> Run:
        """A refresh's run, as the fan-out core controls it."""
        return Run(self.redis, RUNS, uid, self.redis_settings.key_ttl_seconds)

    def store(self, uid: str) -> RunStore:
        return self.run(uid).store

    def pool(self, namespace: str, name: str, scoring: Scoring | None = None) -> AsyncPool:
        return AsyncPool(self.redis, name, namespace, scoring)

    @property
    def credential_key(self) -> str:
        """What per-run Redis passwords are derived from (fanout.access)."""
        return self.settings.worker_credential_key or self.redis_settings.url

    def fetch_rules(self) -> scrape.FetchRules:
        s = self.settings
        return scrape.FetchRules(
            guard=self.network.guard_rule(),
            timeout=s.source_timeout_seconds,
            retries=s.source_retries,
            max_bytes=s.source_max_bytes,
            total_bytes=s.scrape_max_bytes,
            max_candidates=s.max_candidates,
            concurrency=s.scrape_concurrency,
        )


class Refused(Exception):
    """A refresh that can never run: it fails with this reason and message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Unavailable(Exception):
    """Redis or the Kubernetes API did not answer: a retry may cure it. The
    refresh says so in condition Stalled while the step is retried."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def redis_unavailable(while_: str, exc: RedisError) -> Unavailable:
    return Unavailable("RedisUnavailable", f"Redis unavailable{while_}: {redis_problem(exc)}")
