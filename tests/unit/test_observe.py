"""Metrics and the watcher without a cluster: what a scrape and a piped
``proxyrefresh watch`` show for a sequence of statuses and events."""

from __future__ import annotations

import io
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from proxyrefresh.front import ui, watch
from proxyrefresh.operator.metrics import Metrics


def scrape(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def labels(**kv: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(kv.items()))


def test_metrics_follow_what_the_operator_wrote() -> None:
    m = Metrics()
    first = {"phase": "Processing", "candidates": 10, "checked": 4, "live": 1, "totalChunks": 2}
    m.refresh_written("u1", "ns", "default", first)
    got = scrape(m)
    assert (
        got[("proxyrefresh_refreshes", labels(namespace="ns", pool="default", phase="Processing"))]
        == 1
    )
    assert (
        got[("proxyrefresh_refreshes", labels(namespace="ns", pool="default", phase="Complete"))]
        == 0
    )
    assert got[("proxyrefresh_refresh_checked", labels(namespace="ns", pool="default"))] == 4
    m.refresh_written(
        "u1",
        "ns",
        "default",
        {"phase": "Complete", "candidates": 10, "checked": 10, "live": 3, "usable": 2,
         "failedChunks": 1, "startedAt": "2026-12-01T10:00:00Z",
         "completedAt": "2026-12-01T10:00:42Z"},
    )  # fmt: skip
    again = {"phase": "Complete", "failedChunks": 1, "startedAt": "x", "completedAt": "y"}
    m.refresh_written("u1", "ns", "default", again)
    m.pod_failures("u1", "ns", "default", 2)
    m.pod_failures("u1", "ns", "default", 2)  # read again: no new retry
    m.pool_written("ns", "default", {"size": 7, "usable": 5})
    got = scrape(m)
    pool = labels(namespace="ns", pool="default")
    assert (
        got[("proxyrefresh_refreshes", labels(namespace="ns", pool="default", phase="Processing"))]
        == 0
    )
    assert (
        got[("proxyrefresh_refreshes", labels(namespace="ns", pool="default", phase="Complete"))]
        == 1
    )
    # The end is observed once, with the status's own times.
    ended = labels(namespace="ns", pool="default", outcome="complete")
    count = ("proxyrefresh_refresh_duration_seconds_count", ended)
    total = ("proxyrefresh_refresh_duration_seconds_sum", ended)
    assert (got[count], got[total]) == (1, 42)
    assert got[("proxyrefresh_chunk_failures_total", pool)] == 1
    assert got[("proxyrefresh_chunk_retries_total", pool)] == 2
    assert got[("proxyrefresh_pool_size", pool)] == 7
    assert got[("proxyrefresh_pool_usable", pool)] == 5
    m.refresh_gone("u1")
    assert ("proxyrefresh_refresh_checked", pool) not in scrape(m)


def test_no_label_carries_an_address_or_a_refresh_name() -> None:
    m = Metrics()
    m.refresh_written("u1", "ns", "default", {"phase": "Complete", "checked": 1})
    names = {name for (_, lbls) in scrape(m) for name, _ in lbls}
    assert names <= {"namespace", "pool", "phase", "outcome", "component", "kind", "le"} | {
        "version",
        "python_version",
    }


def test_metrics_an_alert_can_stand_on() -> None:
    """Issue 32, item 6: no gauge drops to 0 when a refresh starts, every
    counter has a series before its first increment, a pool without a
    ProxyPool has its usable count, and the last success has a timestamp."""
    m = Metrics()
    pool = labels(namespace="ns", pool="p")
    m.refresh_written("u1", "ns", "p", {"phase": "Processing", "live": 0})
    got = scrape(m)
    assert got[("proxyrefresh_chunk_failures_total", pool)] == 0
    assert got[("proxyrefresh_chunk_retries_total", pool)] == 0
    ended = labels(namespace="ns", pool="p", outcome="failed")
    assert got[("proxyrefresh_refresh_duration_seconds_count", ended)] == 0
    assert got[("proxyrefresh_redis_errors_total", labels(component="refresh"))] == 0
    assert ("proxyrefresh_pool_last_success_timestamp_seconds", pool) not in got
    done = {"phase": "Complete", "live": 30, "poolSize": 40, "poolUsable": 25}
    done |= {"startedAt": "2026-12-01T10:00:00Z", "completedAt": "2026-12-01T10:01:00Z"}
    m.refresh_written("u1", "ns", "p", done)
    m.refresh_written("u2", "ns", "p", {"phase": "Scraping"})  # the next one starts
    got = scrape(m)
    assert got[("proxyrefresh_refresh_live", pool)] == 30  # not 0: no flapping alert
    assert got[("proxyrefresh_pool_usable", pool)] == 25
    assert got[("proxyrefresh_pool_last_success_timestamp_seconds", pool)] == 1_796_119_260
    m.refresh_gone("u1")  # pruned from history: the last success stays known
    got = scrape(m)
    assert got[("proxyrefresh_pool_last_success_timestamp_seconds", pool)] == 1_796_119_260
    (build,) = [key for key in got if key[0] == "proxyrefresh_build_info"]
    assert dict(build[1])["version"]


class Statuses:
    def __init__(self, *statuses: dict[str, Any]) -> None:
        self.statuses = list(statuses)

    def __call__(self) -> dict[str, Any]:
        return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]


class NoEvents(watch.Events):
    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.pubsub, self.events = None, events

    def next(self, timeout: float) -> dict[str, Any] | None:
        return self.events.pop(0) if self.events else None


def test_piped_watch_prints_a_line_per_change_and_never_goes_back() -> None:
    out = io.StringIO()
    ticks = iter(range(100))
    processing = {
        "phase": "Processing",
        "candidates": 20,
        "totalChunks": 4,
        "completedChunks": 1,
        "checked": 5,
    }
    complete = {
        **processing,
        "phase": "Complete",
        "completedChunks": 4,
        "checked": 20,
        "live": 3,
        "message": "pool default holds 3",
    }
    statuses = Statuses({"phase": "Scraping"}, processing, processing, complete)
    events = NoEvents(
        [{}, {"processed": 12, "succeeded": 2, "completed_chunks": 2, "total_chunks": 4}, {}]
    )
    view = watch.follow(
        "r1", statuses, events, watch.Output("r1", out, bar=False), clock=lambda: float(next(ticks))
    )
    assert view.phase == "Complete"
    lines = out.getvalue().splitlines()
    assert lines[0] == "Scraping"
    assert "checked 12/20" in "\n".join(lines)
    assert lines[-1].startswith("Complete  chunks 4/4  checked 20/20  live 3")
    assert lines[-1].endswith("- pool default holds 3")
    checked = [int(x.split("checked ")[1].split("/")[0]) for x in lines if "checked" in x]
    assert checked == sorted(checked)
    assert len(lines) == len(set(lines))  # a line only when something changed


def test_the_reason_of_a_failure() -> None:
    status = {"conditions": [{"type": "Failed", "status": "True", "reason": "NoCandidates",
                              "message": "url x: unreachable"}]}  # fmt: skip
    assert watch.failure(status) == "NoCandidates: url x: unreachable"


def test_a_stalled_refresh_says_why_until_it_moves_on() -> None:
    stall = {"type": "Stalled", "status": "True", "reason": "RedisUnavailable",
             "message": "Redis unavailable while merging: Connection refused"}  # fmt: skip
    status = {"phase": "Merging", "message": "merging", "conditions": [stall]}
    shown = watch.line(watch.from_status(status), None, None)
    cause = "RedisUnavailable: Redis unavailable while merging: Connection refused"
    assert shown == f"Merging  - stalled, {cause}"
    resumed = {**status, "conditions": [{**stall, "status": "False", "reason": "Resumed"}]}
    assert watch.line(watch.from_status(resumed), None, None) == "Merging  - merging"
    # The live page says the same.
    row = ui.refresh_row({"metadata": {"name": "r"}, "status": status})
    assert row["message"] == f"stalled, {cause}"
