"""How the CLI prints what it read, in kubectl's ``-o`` formats: text for
people (``wide`` adds columns), ``json`` and ``yaml`` for programs, with
times as RFC 3339 UTC and scores rounded, not epoch floats and
``1.2100000000000002``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the pool's module pulls in redis: not for `check`'s start
    from proxyrefresh.pool import PoolEntry

SCORE_DIGITS = 3
LATENCY_DIGITS = 1


class Format(StrEnum):
    TEXT = "text"
    WIDE = "wide"
    JSON = "json"
    YAML = "yaml"


def timestamp(epoch: float | None) -> str | None:
    """RFC 3339 in UTC, to the second, as Kubernetes writes times."""
    from proxyrefresh.api import TIME_FORMAT

    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).strftime(TIME_FORMAT)


def rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def entry_view(entry: PoolEntry) -> dict[str, Any]:
    """One pool entry as printed: the stored fields, times and numbers
    made readable."""
    view = entry.model_dump(mode="json")
    view["score"] = rounded(entry.score, SCORE_DIGITS)
    view["latency_ms"] = rounded(entry.latency_ms, LATENCY_DIGITS)
    view["last_checked"] = timestamp(entry.last_checked)
    view["last_ok"] = timestamp(entry.last_ok)
    return view


def document(value: Any, fmt: Format) -> str:
    """``value`` as one JSON or YAML document."""
    if fmt is Format.YAML:
        import yaml

        return str(yaml.safe_dump(value, sort_keys=False)).rstrip("\n")
    return json.dumps(value)


WIDE_COLUMNS = ("proxy", "protocol", "anonymity", "latency_ms", "score", "failures", "last_ok")


def table(rows: list[dict[str, Any]], columns: tuple[str, ...] = WIDE_COLUMNS) -> str:
    """Rows as kubectl prints them: upper-case headers, columns padded by
    three spaces, no borders (so ``awk`` and ``column`` still work)."""
    cells = [[c.upper() for c in columns]]
    cells += [["" if row.get(c) is None else str(row[c]) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join(
        "   ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in cells
    )
