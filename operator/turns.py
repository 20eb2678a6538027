"""Turns at a pool: who waits for a refresh of their pool to end.

``concurrencyPolicy: Forbid`` keeps a refresh Pending while an older one of
its pool runs. Stepping every waiting refresh every couple of seconds to
find that nothing changed kept a third of a core busy with 900 of them;
instead a refresh that ends (or is deleted) wakes those waiting for its
pool, and they step then (and rarely otherwise).
"""

from __future__ import annotations

import asyncio


class PoolTurns:
    """Wakes the refreshes waiting for a pool when one of its refreshes
    ends: 900 waiting refreshes stepping every 2 s kept a third of a core
    busy finding out that nothing had changed."""

    def __init__(self) -> None:
        self._events: dict[tuple[str, str], asyncio.Event] = {}

    def event(self, namespace: str, pool: str) -> asyncio.Event:
        """Taken before the step, so a wake during it is not missed."""
        return self._events.setdefault((namespace, pool), asyncio.Event())

    def wake(self, namespace: str, pool: str) -> None:
        event = self._events.pop((namespace, pool), None)
        if event is not None:
            event.set()
