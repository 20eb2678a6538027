"""Decisions about a pool's refreshes: who may run, who is replaced, and
which finished ones are kept. Pure functions over listed resources."""

from __future__ import annotations

from typing import Any

from proxyrefresh.api import Phase


def _phase(item: dict[str, Any]) -> Phase | None:
    raw = (item.get("status") or {}).get("phase")
    return Phase(raw) if isinstance(raw, str) and raw in {p.value for p in Phase} else None


def _order(item: dict[str, Any]) -> tuple[str, str]:
    meta = item["metadata"]
    return meta.get("creationTimestamp") or "", meta["name"]


def pool_of(item: dict[str, Any]) -> str:
    return str((item.get("spec") or {}).get("pool") or "default")


def index_entry(item: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """The refresh as the operator's index keeps it: by (namespace, pool),
    only what :func:`unfinished_before` and :func:`history_to_delete` read."""
    meta = item["metadata"]
    kept = {
        "metadata": {
            k: meta.get(k)
            for k in ("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp")
        },
        "spec": {"pool": pool_of(item)},
        "status": {
            k: (item.get("status") or {}).get(k) for k in ("phase", "completedAt", "candidates")
        },
    }
    return {(str(meta["namespace"]), pool_of(item)): kept}


def candidates_held(items: list[dict[str, Any]], me: dict[str, Any]) -> int:
    """Candidates the unfinished refreshes of ``items`` (me aside) hold in Redis."""
    my_uid = me["metadata"]["uid"]
    return sum(
        int((it.get("status") or {}).get("candidates") or 0)
        for it in items
        if it["metadata"]["uid"] != my_uid and not (_phase(it) or Phase.PENDING).terminal
    )


def unfinished_before(items: list[dict[str, Any]], me: dict[str, Any]) -> list[dict[str, Any]]:
    """Refreshes of my pool, created before me, not finished: first in, first served."""
    mine, my_uid = pool_of(me), me["metadata"]["uid"]
    return sorted(
        (
            it
            for it in items
            if it["metadata"]["uid"] != my_uid
            and pool_of(it) == mine
            and not it["metadata"].get("deletionTimestamp")
            and not (_phase(it) or Phase.PENDING).terminal
            and _order(it) < _order(me)
        ),
        key=_order,
    )


def history_to_delete(
    items: list[dict[str, Any]], pool: str, keep_complete: int, keep_failed: int
) -> list[str]:
    """Names of finished refreshes of ``pool`` beyond the newest kept ones."""
    doomed: list[str] = []
    for phase, keep in ((Phase.COMPLETE, keep_complete), (Phase.FAILED, keep_failed)):
        done = [it for it in items if pool_of(it) == pool and _phase(it) is phase]
        done.sort(
            key=lambda it: ((it.get("status") or {}).get("completedAt") or "", *_order(it)),
            reverse=True,
        )
        doomed += [it["metadata"]["name"] for it in done[keep:]]
    return doomed
