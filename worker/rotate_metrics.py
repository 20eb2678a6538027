"""The rotator's Prometheus metrics, on its API port at /metrics.

Computed at scrape time from the counters the rotator keeps anyway (its
/healthz shows the same), so serving them costs the hot path nothing.
Labels are the pool's namespace and name, and the status code: bounded
sets, never a client's or an upstream's address. Unauthenticated like
/healthz: they name no proxy."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from proxyrefresh.worker.rotate import Rotator

COUNTED = {
    "requests": "Plain HTTP requests relayed through an upstream or refused.",
    "tunnels": "CONNECT tunnels asked for.",
    "upstream_failures": "Upstream attempts that failed and were reported to the pool.",
    "retried": "Requests tried again on another upstream.",
    "refused": "Requests the rotator answered itself (an error, or 407).",
}


class RotatorCollector(Collector):
    def __init__(self, rotator: Rotator) -> None:
        self.rotator = rotator

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        calls = self.rotator.pool.calls
        where = [calls.namespace, calls.name]
        counters = self.rotator.totals()  # every worker process's
        for name, help_text in COUNTED.items():
            family = CounterMetricFamily(
                f"proxyrefresh_rotator_{name}", help_text, labels=["namespace", "pool"]
            )
            family.add_metric(where, counters[name])
            yield family
        responses = CounterMetricFamily(
            "proxyrefresh_rotator_responses",
            "Upstream answers relayed to clients, by status code.",
            labels=["namespace", "pool", "code"],
        )
        for code, count in sorted(counters["by_status"].items()):
            responses.add_metric([*where, str(code)], count)
        yield responses
        open_now = GaugeMetricFamily(
            "proxyrefresh_rotator_connections",
            "Client connections open now.",
            labels=["namespace", "pool"],
        )
        open_now.add_metric(where, counters["connections"])
        yield open_now
        sessions = GaugeMetricFamily(
            "proxyrefresh_rotator_sessions",
            "Sticky sessions whose upstream a rotator process holds in memory now.",
            labels=["namespace", "pool"],
        )
        sessions.add_metric(where, counters["sessions"])
        yield sessions


def registry_for(rotator: Rotator) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(RotatorCollector(rotator))
    return registry
