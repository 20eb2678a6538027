"""The operator's Prometheus metrics.

Workers are short-lived, so nothing scrapes them: what they count (checked,
live, chunks) reaches the operator through Redis, lands in each refresh's
status, and is exported from there. One registry per operator process,
held by the reconcile Context (no module-level metric objects): tests build
their own.

Names follow the Prometheus conventions: a unit suffix where there is a
unit, ``_total`` on counters, labels from bounded sets only (namespace,
pool, phase, outcome, component; never a proxy address or a refresh name).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from proxyrefresh import __version__
from proxyrefresh.api import Phase, ProxyPoolStatus, ProxyRefreshStatus, finished
from proxyrefresh.operator.status import parse_time

DURATION_BUCKETS = (5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# Status fields of a refresh exported per pool (from its latest refresh).
COUNTS = {  # a status field (by its name in the model) -> its gauge's name
    "candidates": "candidates",
    "checked": "checked",
    "live": "live",
    "usable": "usable",
    "total_chunks": "chunks",
    "completed_chunks": "chunks_completed",
    "failed_chunks": "chunks_failed",
}


@dataclass
class Seen:
    """What the operator last wrote of one refresh."""

    namespace: str
    pool: str
    phase: str
    status: ProxyRefreshStatus
    order: float  # when it was first seen: the latest refresh of a pool wins


class _State(Collector):
    """Gauges computed at scrape time from what the operator last wrote."""

    def __init__(self) -> None:
        self.refreshes: dict[str, Seen] = {}
        self.pools: dict[tuple[str, str], dict[str, int]] = {}
        # When each pool last had a refresh complete (epoch seconds): kept
        # when the refresh itself is pruned, for "the pool went stale".
        self.last_success: dict[tuple[str, str], float] = {}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        by_phase = GaugeMetricFamily(
            "proxyrefresh_refreshes",
            "Refreshes by pool and phase, as this operator last wrote them.",
            labels=["namespace", "pool", "phase"],
        )
        counts: dict[tuple[str, str, str], int] = {}
        latest: dict[tuple[str, str], Seen] = {}
        for seen in self.refreshes.values():
            key = (seen.namespace, seen.pool, seen.phase)
            counts[key] = counts.get(key, 0) + 1
            where = (seen.namespace, seen.pool)
            if where not in latest or _later(seen, latest[where]):
                latest[where] = seen
        for ns, name in sorted(latest):
            for phase in Phase:  # every phase, zeros included: a gauge that moves
                by_phase.add_metric([ns, name, phase.value], counts.get((ns, name, phase.value), 0))
        yield by_phase
        for field, metric in COUNTS.items():
            family = GaugeMetricFamily(
                f"proxyrefresh_refresh_{metric}",
                f"{ProxyRefreshStatus.model_fields[field].alias} of the pool's latest refresh "
                "(its status).",
                labels=["namespace", "pool"],
            )
            for (ns, name), seen in sorted(latest.items()):
                family.add_metric([ns, name], float(getattr(seen.status, field) or 0))
            yield family
        for field in ("size", "usable"):
            family = GaugeMetricFamily(
                f"proxyrefresh_pool_{field}",
                f"The pool's {field}, as its status last said.",
                labels=["namespace", "pool"],
            )
            for (ns, name), values in sorted(self.pools.items()):
                if field in values:
                    family.add_metric([ns, name], values[field])
            yield family
        stale = GaugeMetricFamily(
            "proxyrefresh_pool_last_success_timestamp_seconds",
            "When a refresh of the pool last completed (alert on time() minus this).",
            labels=["namespace", "pool"],
        )
        for (ns, name), when in sorted(self.last_success.items()):
            stale.add_metric([ns, name], when)
        yield stale


def _later(seen: Seen, than: Seen) -> bool:
    """Whether ``seen`` is the one a pool's latest-refresh gauges show: the
    latest finished refresh, or the latest one while none has finished, so
    the gauges do not drop to 0 each time a refresh starts (alerts flap)."""
    if finished(seen.phase) != finished(than.phase):
        return finished(seen.phase)
    return seen.order > than.order


class Metrics:
    """Every metric of one operator process, on its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.state = _State()
        self.registry.register(self.state)
        self.durations = Histogram(
            "proxyrefresh_refresh_duration_seconds",
            "From a refresh's start to Complete or Failed.",
            ["namespace", "pool", "outcome"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.chunk_retries = Counter(
            "proxyrefresh_chunk_retries_total",
            "Worker pods that failed and were retried by their Job.",
            ["namespace", "pool"],
            registry=self.registry,
        )
        self.chunk_failures = Counter(
            "proxyrefresh_chunk_failures_total",
            "Chunks that ended without a result (their pods ran out of retries).",
            ["namespace", "pool"],
            registry=self.registry,
        )
        self.redis_errors = Counter(
            "proxyrefresh_redis_errors_total",
            "Redis calls that failed (the step or watch retried later).",
            ["component"],
            registry=self.registry,
        )
        self.patches = Counter(
            "proxyrefresh_status_patches_total",
            "Status patches sent to the API server.",
            ["kind"],
            registry=self.registry,
        )
        self.reconcile = Histogram(
            "proxyrefresh_reconcile_duration_seconds",
            "One reconcile step of a refresh or a pool, reads and write included.",
            ["kind"],
            buckets=RECONCILE_BUCKETS,
            registry=self.registry,
        )
        self._pod_failures: dict[str, int] = {}
        build = Gauge(
            "proxyrefresh_build_info",
            "Always 1: the operator's version and Python, as labels.",
            ["version", "python_version"],
            registry=self.registry,
        )
        build.labels(__version__, platform.python_version()).set(1)
        for kind in ("refresh", "pool"):  # every series from the start: rate() needs a 0
            self.redis_errors.labels(kind)
            self.patches.labels(kind)

    def refresh_written(self, uid: str, namespace: str, pool: str, written: dict[str, Any]) -> None:
        """After a refresh's status write: its gauges, and at its end its duration."""
        status = ProxyRefreshStatus.model_validate(written)  # as written: checked on its way out
        before = self.state.refreshes.get(uid)
        phase = str(status.phase or Phase.PENDING.value)
        order = before.order if before else time.time()
        self.state.refreshes[uid] = Seen(namespace, pool, phase, status, order)
        if before is None:  # the pool's counters exist (at 0) before their first increment
            self.chunk_failures.labels(namespace, pool)
            self.chunk_retries.labels(namespace, pool)
            for outcome in ("complete", "failed"):
                self.durations.labels(namespace, pool, outcome)
        failed_before = (before.status.failed_chunks if before else 0) or 0
        failed_now = status.failed_chunks or 0
        if failed_now > failed_before:
            self.chunk_failures.labels(namespace, pool).inc(failed_now - failed_before)
        if status.pool_size is not None:  # a pool without a ProxyPool has only this
            values = self.state.pools.setdefault((namespace, pool), {})
            values["size"] = status.pool_size
            if status.pool_usable is not None:
                values["usable"] = status.pool_usable
        if phase == Phase.COMPLETE.value:
            self._succeeded(namespace, pool, status.completed_at)
        was_terminal = before is not None and finished(before.phase)
        if finished(phase) and not was_terminal:
            seconds = _seconds_between(status.started_at, status.completed_at)
            if seconds is not None:
                outcome = "complete" if phase == Phase.COMPLETE.value else "failed"
                self.durations.labels(namespace, pool, outcome).observe(seconds)

    def pod_failures(self, uid: str, namespace: str, pool: str, failed: int) -> None:
        """The Job's count of failed pods, as last read: the rise is retries."""
        rise = failed - self._pod_failures.get(uid, 0)
        if rise > 0:
            self.chunk_retries.labels(namespace, pool).inc(rise)
            self._pod_failures[uid] = failed

    def refresh_gone(self, uid: str) -> None:
        self.state.refreshes.pop(uid, None)
        self._pod_failures.pop(uid, None)

    def pool_written(self, namespace: str, name: str, written: dict[str, Any]) -> None:
        status = ProxyPoolStatus.model_validate(written)
        values = {"size": status.size, "usable": status.usable}
        self.state.pools.setdefault((namespace, name), {}).update(
            {k: v for k, v in values.items() if v is not None}
        )
        self._succeeded(namespace, name, status.last_refresh_at)

    def _succeeded(self, namespace: str, pool: str, when: Any) -> None:
        try:
            at = parse_time(when)
        except (TypeError, ValueError):
            return
        if at is not None:
            key = (namespace, pool)
            self.state.last_success[key] = max(at, self.state.last_success.get(key, 0.0))

    def pool_gone(self, namespace: str, name: str) -> None:
        self.state.pools.pop((namespace, name), None)
        self.state.last_success.pop((namespace, name), None)

    def serve(self, address: str, port: int) -> None:
        """Serve /metrics from a thread of its own (prometheus-client's server)."""
        from prometheus_client import start_http_server

        start_http_server(port, addr=address, registry=self.registry)


def _seconds_between(start: Any, end: Any) -> float | None:
    try:
        began, ended = parse_time(start), parse_time(end)
    except (TypeError, ValueError):
        return None
    return None if began is None or ended is None else max(0.0, ended - began)
