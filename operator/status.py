"""What the resource's status should say, computed without a cluster.

Every function here is pure: the handlers feed it the old status, the Redis
progress and the Job, and patch only the fields that changed. Counters never
move backwards, whatever order the observations arrive in.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from proxyrefresh.api import TIME_FORMAT, Phase
from proxyrefresh.fanout.job import active_pods, failed_indexes
from proxyrefresh.fanout.store import Progress

MONOTONIC = ("completedChunks", "checked", "live", "failedChunks")


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime(TIME_FORMAT)


def parse_time(text: str | None) -> float | None:
    """A status timestamp (written by :func:`now_iso`) as epoch seconds."""
    if not text:
        return None
    return dt.datetime.strptime(text, TIME_FORMAT).replace(tzinfo=dt.UTC).timestamp()


def progress_text(done: int, total: int) -> str:
    pct = 100 * done // total if total else 0
    return f"{done}/{total} ({pct}%)"


def set_condition(
    conditions: list[dict[str, Any]] | None,
    kind: str,
    status: bool,
    reason: str,
    message: str,
    generation: int | None = None,
) -> list[dict[str, Any]]:
    """The conditions with ``kind`` set; its transition time moves only when
    its status does."""
    value = "True" if status else "False"
    out = [dict(cond) for cond in conditions or [] if cond.get("type") != kind]
    old = next((cond for cond in conditions or [] if cond.get("type") == kind), None)
    since = old["lastTransitionTime"] if old and old.get("status") == value else now_iso()
    new = {
        "type": kind,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
    }
    if generation is not None:
        new["observedGeneration"] = generation
    out.append(new)
    return out


def progress_fields(
    old: dict[str, Any], progress: Progress, job: dict[str, Any] | None
) -> dict[str, Any]:
    """Status fields for an active refresh; counters clamped to never drop."""
    fields: dict[str, Any] = {
        "totalChunks": progress.total_chunks,
        "completedChunks": progress.completed_chunks,
        # The core counts processed and succeeded items; for proxies that
        # is checked and live.
        "checked": progress.processed,
        "live": progress.succeeded,
        "failedChunks": failed_indexes(job),
    }
    for name in MONOTONIC:
        fields[name] = max(int(old.get(name) or 0), int(fields[name]))
    fields["progress"] = progress_text(fields["completedChunks"], fields["totalChunks"])
    active = active_pods(job)
    started = fields["completedChunks"] or fields["checked"] or active
    if old.get("phase") in (Phase.DISPATCHED, Phase.PROCESSING) and started:
        fields["phase"] = Phase.PROCESSING.value
    return fields


def changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Only the fields whose value differs: no patch when nothing moved."""
    return {k: v for k, v in new.items() if old.get(k) != v}
