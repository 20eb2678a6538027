"""How many refreshes scrape at once: operator-wide, and per namespace.

A scrape holds a piece of each list it reads (a JSON document whole, up
to its source's cap) and keeps a connection per source; its candidates go
to Redis as they are found. Per namespace, so that one tenant's many refreshes
(or their sources that hang until their timeout) take one slot and leave
the others to everyone else.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class ScrapeSlots:
    def __init__(self, total: int, per_namespace: int) -> None:
        self.total, self.per_namespace = total, per_namespace
        self._running: Counter[str] = Counter()
        self._changed: asyncio.Condition | None = None  # made on the loop that uses it

    @property
    def changed(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    def busy(self, namespace: str) -> str:
        """Why a scrape of ``namespace`` would wait now, or ""."""
        if self._running[namespace] >= self.per_namespace:
            return (
                f"{self._running[namespace]} refresh(es) of this namespace scraping, at most "
                f"{self.per_namespace} at once (PROXYREFRESH_OPERATOR_NAMESPACE_SCRAPES)"
            )
        if sum(self._running.values()) >= self.total:
            return (
                f"{self.total} refreshes scraping, the operator's most at once "
                "(PROXYREFRESH_OPERATOR_CONCURRENT_SCRAPES)"
            )
        return ""

    @asynccontextmanager
    async def hold(self, namespace: str) -> AsyncIterator[None]:
        async with self.changed:
            await self.changed.wait_for(lambda: not self.busy(namespace))
            self._running[namespace] += 1
        try:
            yield
        finally:
            async with self.changed:
                self._running[namespace] -= 1
                if not self._running[namespace]:
                    del self._running[namespace]
                self.changed.notify_all()
