"""Merge a refresh's results into its pool, and write the pool out.

The pool is a list of proxies with scores, kept in the output ConfigMap
(``live_proxies.json`` and ``live_proxies.txt``) and in Redis. Merging
follows the legacy rules (seed 002): fresher data wins; a proxy that passes
again scores x1.1, one that fails x0.5; three failures in a row or a score
under 0.01 drop it; the output is sorted by latency.

The ConfigMap is replaced at the resourceVersion it was read at, so two
refreshes of one pool merging at once never lose each other's updates (the
loser re-reads and merges again), and it records which refreshes it holds,
so a merge repeated after an operator restart changes nothing.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from kubernetes.client.rest import ApiException
from pydantic import BaseModel

from proxyrefresh import constants as c
from proxyrefresh import redact
from proxyrefresh.api import Filter
from proxyrefresh.fanout.store import ChunkResult
from proxyrefresh.models import Anonymity, Protocol, ProxyResult
from proxyrefresh.operator import kube

SUCCESS = 1.1
FAILURE = 0.5
MAX_FAILURES = 3
MIN_SCORE = 0.01
MAX_SCORE = 10.0
REMEMBERED_REFRESHES = 50
JSON_KEY = "live_proxies.json"
TXT_KEY = "live_proxies.txt"


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


class PoolEntry(BaseModel):
    proxy: str
    protocol: Protocol
    host: str
    port: int
    anonymity: Anonymity
    exit_ip: str | None = None
    latency_ms: float | None = None
    score: float = 1.0
    failures: int = 0
    last_checked: float
    last_ok: float


@dataclass
class Tally:
    """What one refresh found, for its status."""

    checked: int = 0
    live: int = 0
    usable: int = 0
    unchecked: int = 0
    anonymity: Counter[str] = field(default_factory=Counter)
    checked_results: list[ProxyResult] = field(default_factory=list)
    passing: set[str] = field(default_factory=set)


def tally(results: dict[int, ChunkResult], flt: Filter) -> Tally:
    out = Tally()
    for chunk in results.values():
        out.unchecked += len(chunk.pending)
        for outcome in chunk.outcomes:
            row = outcome.value
            if "protocol" not in row:  # an item the worker could not even parse
                out.checked += 1
                continue
            result = ProxyResult.model_validate(row)
            out.checked += 1
            out.checked_results.append(result)
            if result.alive:
                out.live += 1
                out.anonymity[str(result.anonymity)] += 1
            if result.passes(flt.min_anonymity, flt.max_latency_ms):
                out.usable += 1
                out.passing.add(result.proxy)
    return out


def identity(url: str) -> str:
    """A pool entry's key: scheme, user name, host and port, no password
    (``socks5://user:***@host:port``). Also what a ConfigMap may show."""
    return redact.url(url)


def has_credentials(url: str) -> bool:
    return "@" in urlsplit(url).netloc


def merge_pool(
    pool: dict[str, PoolEntry], found: Tally, now: float | None = None
) -> dict[str, PoolEntry]:
    """The pool after one refresh (pure)."""
    now = time.time() if now is None else now
    merged = dict(pool)
    for result in found.checked_results:
        key = identity(result.proxy)
        old = merged.get(key)
        if result.proxy in found.passing and result.anonymity is not None:
            merged[key] = PoolEntry(
                proxy=result.proxy,
                protocol=result.protocol,
                host=result.host,
                port=result.port,
                anonymity=result.anonymity,
                exit_ip=result.exit_ip,
                latency_ms=result.latency_ms,
                score=min(MAX_SCORE, old.score * SUCCESS) if old else 1.0,
                failures=0,
                last_checked=now,
                last_ok=now,
            )
        elif old is not None:
            score, failures = old.score * FAILURE, old.failures + 1
            if failures >= MAX_FAILURES or score < MIN_SCORE:
                del merged[key]
            else:
                merged[key] = old.model_copy(
                    update={"score": score, "failures": failures, "last_checked": now}
                )
    return merged


def ordered(pool: dict[str, PoolEntry]) -> list[PoolEntry]:
    return sorted(pool.values(), key=lambda e: (e.latency_ms or float("inf"), -e.score, e.proxy))


def render(pool: dict[str, PoolEntry], reveal: dict[str, str] | None = None) -> dict[str, str]:
    """The pool as ``live_proxies.json`` and ``.txt``. Passwords are shown
    only for entries found in ``reveal`` (identity -> full URL): without it
    (a ConfigMap that `view` can read) a credentialed entry keeps its place
    in the JSON, password masked, and is left out of the TXT, which is for
    clients that connect with what it says."""
    reveal = reveal or {}
    entries = [
        e.model_copy(update={"proxy": reveal.get(key, identity(e.proxy))})
        for key, e in ((identity(e.proxy), e) for e in ordered(pool))
    ]
    usable = [e for e in entries if not has_credentials(e.proxy) or e.proxy in reveal.values()]
    return {
        JSON_KEY: json.dumps([e.model_dump(mode="json") for e in entries], indent=1) + "\n",
        TXT_KEY: "".join(f"{e.proxy}\n" for e in usable),
    }


def full_urls(pool: dict[str, PoolEntry]) -> dict[str, str]:
    """identity -> URL for every entry whose URL is whole (not masked)."""
    return {key: e.proxy for key, e in pool.items() if redact.HIDDEN not in e.proxy}


def known_urls(previous_json: str | None, found: Tally) -> dict[str, str]:
    """Whole URLs for the Redis copy of the pool: the previous copy's, then
    this refresh's results."""
    known = {identity(e["proxy"]): e["proxy"] for e in json.loads(previous_json or "[]")}
    known.update({identity(r.proxy): r.proxy for r in found.checked_results})
    return {k: v for k, v in known.items() if redact.HIDDEN not in v}


def withheld(pool: dict[str, PoolEntry]) -> int:
    """How many entries a ConfigMap export holds without their credentials."""
    return sum(1 for e in pool.values() if has_credentials(e.proxy))


def parse_pool(config_map: dict[str, Any] | None) -> dict[str, PoolEntry]:
    raw = ((config_map or {}).get("data") or {}).get(JSON_KEY)
    if not raw:
        return {}
    return {identity(e["proxy"]): PoolEntry.model_validate(e) for e in json.loads(raw)}


def merged_refreshes(config_map: dict[str, Any] | None) -> list[str]:
    raw = (((config_map or {}).get("metadata") or {}).get("annotations") or {}).get(
        c.ANNOTATION_MERGED
    )
    return list(json.loads(raw)) if raw else []


async def write_pool(
    namespace: str,
    name: str,
    pool_name: str,
    refresh_uid: str,
    found: Tally,
    owner_labels: dict[str, str],
    attempts: int = 10,
    include_credentials: bool = False,
) -> dict[str, PoolEntry]:
    """Merge into the ConfigMap with optimistic concurrency; idempotent per
    refresh. Returns the pool as written (or as found, if already merged)."""
    for _ in range(attempts):
        current = await kube.read_config_map(namespace, name)
        if not managed(current, pool_name):
            raise OutputNotManaged(not_managed_message(name, pool_name))
        done = merged_refreshes(current)
        pool = parse_pool(current)
        if refresh_uid in done:
            return pool
        merged = merge_pool(pool, found)
        annotations = dict(((current or {}).get("metadata") or {}).get("annotations") or {})
        annotations[c.ANNOTATION_MERGED] = json.dumps(
            ([*done, refresh_uid])[-REMEMBERED_REFRESHES:]
        )
        metadata: dict[str, Any] = {
            "name": name,
            "namespace": namespace,
            "annotations": annotations,
            "labels": {
                **(((current or {}).get("metadata") or {}).get("labels") or {}),
                **owner_labels,
                c.LABEL_POOL: pool_name,
            },
        }
        if current is not None:
            metadata["resourceVersion"] = current["metadata"]["resourceVersion"]
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": metadata,
            "data": render(merged, full_urls(merged) if include_credentials else None),
        }
        try:
            await kube.write_config_map(namespace, body, exists=current is not None)
            return merged
        except ApiException as exc:
            if exc.status != 409:  # 409: someone else merged first; read again
                raise
    raise RuntimeError(f"ConfigMap {namespace}/{name} kept changing; gave up merging")
