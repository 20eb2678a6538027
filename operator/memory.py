"""How full the shared Redis is, for the operator's admission of new runs.

Every run's chunks and results sit in one Redis (a 1M-line refresh about
100 MB until it is merged). Past its ``maxmemory`` with the policy
``noeviction`` (the chart's bundled Redis; any other policy may silently
drop a run's or a pool's keys) Redis refuses writes; without a maxmemory
it grows until something kills it. So no run starts while Redis holds more
than a high-water share of its maxmemory: the refresh waits in Pending
with the reason, and starts when merged runs free the room. A write that
is refused anyway (OOM) fails only the refresh that made it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.exceptions import OutOfMemoryError, RedisError

from proxyrefresh.redis_topology import on_every_node

LOOK_EVERY = 2.0  # seconds one look at INFO serves every waiting refresh
# What a run costs Redis a candidate, its chunks and results together (a
# 1M-candidate run's chunks alone took 100 MB).
BYTES_PER_CANDIDATE = 250


def out_of_memory(exc: BaseException) -> bool:
    """Redis refused a write for its maxmemory."""
    return isinstance(exc, OutOfMemoryError)  # redis-py's for an OOM reply, in a pipeline too


def full_message(candidates: int | None = None) -> str:
    """(``candidates``: None while they are still being scraped.)"""
    which = "" if candidates is None else f"{candidates} "
    return (
        f"Redis is out of memory (its maxmemory) and refused this refresh's {which}"
        "candidates; what was written is deleted. Give Redis more memory "
        "(redis.bundled.maxmemory) or refresh fewer candidates at a time"
    )


def high_water_message(used: int, maxmemory: int, share: float) -> str:
    return (
        f"Redis holds {used >> 20} MiB of its maxmemory of {maxmemory >> 20} MiB, above the "
        f"high-water mark of {share:.0%} (PROXYREFRESH_OPERATOR_REDIS_HIGH_WATER): "
        "the refresh starts when other runs' keys are freed"
    )


@dataclass
class RedisMemory:
    """INFO memory, looked at no more than once every LOOK_EVERY seconds."""

    redis: Redis
    high_water: float
    _seen_at: float = field(default=-1e9, init=False)
    _full: str = field(default="", init=False)

    async def _levels(self) -> tuple[int, int, int] | None:
        """(used, maxmemory, the high-water mark in bytes), or None when
        Redis will not say (away, a user without INFO) or has no maxmemory."""
        try:  # a cluster's every primary: the fullest one decides
            infos = await on_every_node(self.redis, "INFO", "memory", primaries=True)
        except RedisError:
            return None
        levels = [
            (int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))) for info in infos
        ]
        limited = [(used, most) for used, most in levels if most]
        if not limited:
            return None
        used, maxmemory = max(limited, key=lambda level: level[0] / level[1])
        return used, maxmemory, int(self.high_water * maxmemory)

    async def room(self) -> tuple[int | None, str]:
        """How many candidates fit under the high-water mark now (None: no
        limit known), and what to say of a scrape that finds more."""
        levels = await self._levels()
        if levels is None:
            return None, ""
        used, maxmemory, mark = levels
        room = max(0, mark - used) // BYTES_PER_CANDIDATE
        return room, (
            f"the sources hold more candidates than the {room} Redis has room for "
            f"(about {BYTES_PER_CANDIDATE} bytes each; it holds {used >> 20} MiB of the "
            f"{mark >> 20} MiB under its high-water mark, {self.high_water:.0%} of maxmemory "
            f"{maxmemory >> 20} MiB): give Redis more memory or refresh fewer at a time"
        )

    async def no_room_for(self, candidates: int, held: int = 0) -> str:
        """Why a run of ``candidates`` may not be written now, or "": it would
        take Redis past its high-water mark (looked at afresh: the scrape
        before it may have taken a while). ``held``: bytes of it Redis holds
        already (its spool)."""
        levels = await self._levels()
        need = max(0, candidates * BYTES_PER_CANDIDATE - held)
        if levels is None or levels[0] + need <= levels[2]:
            return ""
        used, maxmemory, mark = levels
        return (
            f"its {candidates} candidates need about {need >> 20} MiB{' more' if held else ''} "
            "of Redis, which holds "
            f"{used >> 20} MiB of the {mark >> 20} MiB under its high-water mark "
            f"({self.high_water:.0%} of maxmemory {maxmemory >> 20} MiB); try again when other "
            "runs have ended, or give Redis more memory"
        )

    async def above_high_water(self) -> str:
        """Why no run may start now, or "" (also when Redis will not say:
        no maxmemory, or a user without INFO; writes then find out)."""
        now = time.monotonic()
        if now - self._seen_at < LOOK_EVERY:
            return self._full
        self._seen_at = now
        levels = await self._levels()
        self._full = ""
        if levels is not None and levels[0] > levels[2]:
            self._full = high_water_message(levels[0], levels[1], self.high_water)
        return self._full
