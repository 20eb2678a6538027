"""A refresh's candidates spooled in its run's keys as they are scraped.

Redis de-duplicates them across sources (by the proxy's identity) and keeps
them in the order first met; once the scrape is done and their number, so
the chunk size, is known, Redis cuts them into the run's chunks
(:meth:`RunStore.chunk_spool`). The operator holds one piece of a list at a
time, whatever the refresh's size.
"""

from __future__ import annotations

import json

from proxyrefresh.fanout.store import RunStore
from proxyrefresh.parse import Candidates


class RunSpool:
    """The :class:`~proxyrefresh.operator.list_reader.Sink` of a refresh's scrape."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self.count = 0

    async def add(self, found: Candidates) -> int:
        entries = [
            (identity, json.dumps(proxy.to_item()).encode()) for identity, proxy in found.entries()
        ]
        added = await self.store.spool(entries)
        self.count += added
        return added
