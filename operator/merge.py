"""What a refresh found, and the pool's ConfigMap export.

The pool itself is in Redis (proxyrefresh.pool: the merge there is atomic
per proxy and remembered per refresh). A ConfigMap holds at most 1 MiB, so
the export holds the pool's best entries that fit under ``output.maxBytes``,
fastest first, as ``live_proxies.json`` (with scores) and
``live_proxies.txt`` (``scheme://host:port`` lines).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

from proxyrefresh import constants as c
from proxyrefresh.api import Filter
from proxyrefresh.fanout.results import StoredResult
from proxyrefresh.models import ProxyResult, Tally
from proxyrefresh.operator import kube
from proxyrefresh.operator.apiclient import ApiError
from proxyrefresh.pool import PoolEntry, identity

JSON_KEY = c.EXPORT_JSON_KEY
TXT_KEY = c.EXPORT_TXT_KEY


class OutputNotManaged(RuntimeError):
    """The output ConfigMap exists and is not ours: it is never touched."""


def managed(config_map: dict[str, Any] | None, pool: str) -> bool:
    """Missing (we may create it), or created by us for this pool."""
    if config_map is None:
        return True
    labels = (config_map.get("metadata") or {}).get("labels") or {}
    return bool(labels.get(c.LABEL_MANAGED_BY) == c.MANAGED_BY and labels.get(c.LABEL_POOL) == pool)


def not_managed_message(name: str, pool: str) -> str:
    return (
        f"output.configMap {name} exists and is not managed by proxyrefresh for pool {pool} "
        f"(labels {c.LABEL_MANAGED_BY}={c.MANAGED_BY}, {c.LABEL_POOL}={pool}); "
        "it was left untouched: choose another name"
    )


def tally_chunk(
    out: Tally, chunk: StoredResult, flt: Filter
) -> Iterator[tuple[str, bool, PoolEntry | None]]:
    """Count one chunk into ``out`` and yield what the pool merges of it:
    (proxy URL, passing, its entry if it passes). Nothing is kept, so a
    merge streams a run of any size."""
    for outcome in chunk.outcomes():
        row = outcome.value
        if "protocol" not in row:  # an item the worker could not even parse
            out.checked += 1
            continue
        result = ProxyResult.model_validate(row)
        passing = result.passes(flt.min_anonymity, flt.max_latency_ms)  # implies an anonymity
        out.add(result, passing)
        yield result.proxy, passing, entry_of(result) if passing else None
    out.unchecked += len(chunk.pending)


def entry_of(result: ProxyResult) -> PoolEntry:
    """A passing result as a pool entry (passing means it has an anonymity)."""
    assert result.anonymity is not None
    return PoolEntry(
        proxy=result.proxy,
        protocol=result.protocol,
        host=result.host,
        port=result.port,
        anonymity=result.anonymity,
        exit_ip=result.exit_ip,
        latency_ms=result.latency_ms,
        last_checked=result.checked_at,
        last_ok=result.checked_at,
    )


def has_credentials(url: str) -> bool:
    return "@" in urlsplit(url).netloc


def ordered(entries: Iterable[PoolEntry]) -> list[PoolEntry]:
    # A latency of 0.0 is a latency (under a tenth of a millisecond), not a missing one.
    unknown = float("inf")
    return sorted(
        entries,
        key=lambda e: (unknown if e.latency_ms is None else e.latency_ms, -e.score, e.proxy),
    )


def shown(entry: PoolEntry, include_credentials: bool) -> PoolEntry:
    """The entry as the export shows it: its password masked unless included."""
    if include_credentials or not has_credentials(entry.proxy):
        return entry  # the same object: a copy of each was most of an export's memory
    return entry.model_copy(update={"proxy": identity(entry.proxy)})


def json_piece(entry: PoolEntry) -> str:
    """One entry as ``json.dumps(entries, indent=1)`` writes it in the list."""
    return " " + json.dumps(entry.model_dump(mode="json"), indent=1).replace("\n", "\n ")


def txt_piece(entry: PoolEntry, include_credentials: bool) -> str:
    """Its line in the TXT, for clients that connect with what it says: none
    for a credentialed entry whose password the export does not carry."""
    if include_credentials or not has_credentials(entry.proxy):
        return f"{entry.proxy}\n"
    return ""


def render(entries: Iterable[PoolEntry], include_credentials: bool = False) -> dict[str, str]:
    """The export as ``live_proxies.json`` and ``.txt``, fastest first.
    Without ``include_credentials`` (a ConfigMap that `view` can read) a
    credentialed entry keeps its place in the JSON, password masked, and is
    left out of the TXT. Made an entry at a time: the whole list's dicts
    beside its text were most of a merge's memory."""
    pieces: list[str] = []
    lines: list[str] = []
    for entry in ordered(entries):
        entry = shown(entry, include_credentials)
        pieces.append(json_piece(entry))
        lines.append(txt_piece(entry, include_credentials))
    return {
        JSON_KEY: "[\n" + ",\n".join(pieces) + "\n]\n" if pieces else "[]\n",
        TXT_KEY: "".join(lines),
    }


def fit(
    entries: list[PoolEntry], budget_bytes: int, include_credentials: bool = False
) -> list[PoolEntry]:
    """The longest prefix of ``entries`` (best first) whose export fits in
    ``budget_bytes``. An entry adds its own pieces to the rendering, and
    their separators, whatever its place: summed, the bound holds exactly."""
    size = len("[]\n")
    for n, entry in enumerate(entries):
        entry = shown(entry, include_credentials)
        size += len(json_piece(entry).encode()) + len(",\n")
        size += len(txt_piece(entry, include_credentials).encode())
        if size > budget_bytes:
            return entries[:n]
    return entries


def withheld(entries: Iterable[PoolEntry]) -> int:
    """How many exported entries are there without their credentials."""
    return sum(1 for e in entries if has_credentials(e.proxy))


async def write_export(
    namespace: str,
    name: str,
    pool_name: str,
    entries: list[PoolEntry],
    owner_labels: dict[str, str],
    include_credentials: bool = False,
    attempts: int = 10,
) -> None:
    """Replace the ConfigMap export with ``entries``, only if it is ours;
    written at the resourceVersion it was read at, so a write that raced
    another is repeated on the newer one (the pool in Redis is the truth,
    the export a view of it: the last writer's view is as good)."""
    data = render(entries, include_credentials)  # the same whatever attempt writes it
    for _ in range(attempts):
        current = await kube.read_config_map(namespace, name)
        if not managed(current, pool_name):
            raise OutputNotManaged(not_managed_message(name, pool_name))
        meta = (current or {}).get("metadata") or {}
        annotations = dict(meta.get("annotations") or {})
        annotations.pop(c.ANNOTATION_MERGED, None)  # pools before 0.2 kept their merges here
        metadata: dict[str, Any] = {
            "name": name,
            "namespace": namespace,
            "annotations": annotations,
            "labels": {**(meta.get("labels") or {}), **owner_labels, c.LABEL_POOL: pool_name},
        }
        if current is not None:
            metadata["resourceVersion"] = meta["resourceVersion"]
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": metadata,
            "data": data,
        }
        try:
            await kube.write_config_map(namespace, body, exists=current is not None)
            return
        except ApiError as exc:
            if exc.status != 409:  # 409: written meanwhile; read again
                raise
    raise RuntimeError(f"ConfigMap {namespace}/{name} kept changing; gave up writing it")
