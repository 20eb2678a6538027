"""The Redis key schema of one fan-out run, and every operation on it.

Keys are ``proxyrefresh:{<uid>}:<field>``; the braces are a Redis Cluster
hash tag, so all keys of one run sit in one slot and the Lua scripts below
may touch several of them atomically. Every key carries a TTL; the operator
extends it while the run is active and deletes the keys with the resource.

Why scripts: a retried pod (same index) must overwrite its own result and
be counted once, and progress must never go backwards. The legacy system
INCRed a counter per finished chunk, so retries counted twice (seed 000).
Here the completed counter moves only when an index first enters the
completed set, and per-index progress is kept as absolute values whose
changes are folded into the totals, all inside one script.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel
from redis.asyncio import Redis
from redis.exceptions import NoPermissionError, ResponseError
from redis.typing import EncodableT, FieldT

from proxyrefresh.fanout.results import ChunkResult, ItemOutcome, StoredResult
from proxyrefresh.redis_topology import publish_verb

__all__ = ["ChunkResult", "ItemOutcome", "Progress", "RunKeys", "RunStore", "StateLost", "chunked"]

T = TypeVar("T")
DEFAULT_TTL_SECONDS = 24 * 3600
# One HSET carries up to this many chunks or bytes, whichever comes first:
# 16 chunks of 6,400 items in one command held 22 MB at once (the JSON and
# its encoding), a third of an operator's peak memory.
CHUNK_WRITE_BATCH = 500
CHUNK_WRITE_BYTES = 1 << 20


# A worker may only call the run's scripts, never load them (fanout.access):
# after a Redis restart it waits this long for the operator, which loads
# them again while it follows the run, before it gives up.
SCRIPT_WAIT_SECONDS = 30.0


def chunked(items: Sequence[T], size: int) -> Iterator[list[T]]:
    """``items`` in chunks of ``size``, made one at a time as they are taken
    (what :meth:`RunStore.write_chunks` wants: a run is never held twice)."""
    return (list(items[i : i + size]) for i in range(0, len(items), size))


class StateLost(RuntimeError):
    """The run's keys are gone (expired, deleted, or Redis restarted empty)."""


async def run_script(script: Any, keys: list[Any], args: list[Any]) -> Any:
    """Call a registered script; if Redis forgot it and this user may not
    load it, wait for the operator to load it again."""
    deadline = time.monotonic() + SCRIPT_WAIT_SECONDS
    while True:
        try:
            return await script(keys=keys, args=args)
        except NoPermissionError as exc:
            if "script|load" not in str(exc):
                raise
            if time.monotonic() >= deadline:
                raise NoPermissionError(
                    f"the run's scripts are not loaded in Redis after {SCRIPT_WAIT_SECONDS:.0f}s "
                    "and this worker's user may not load them (the operator does, while it "
                    "follows the run)"
                ) from exc
            await asyncio.sleep(1.0)


class Progress(BaseModel):
    """A consistent snapshot of a run's counters."""

    total_chunks: int
    completed_chunks: int
    processed: int
    succeeded: int
    started_at: float | None = None
    completed_at: float | None = None


@dataclass(frozen=True)
class RunKeys:
    """The names of every key of one run: ``<prefix>:{<uid>}:<field>``."""

    uid: str
    prefix: str  # the kind's (fanout.kind.Kind.key_prefix)

    def key(self, field: str) -> str:
        return f"{self.prefix}:{{{self.uid}}}:{field}"

    @property
    def chunks(self) -> str:  # hash: index -> JSON list of work items
        return self.key("chunks")

    @property
    def spool(self) -> str:  # list: work items as JSON, in the order first met, until chunked
        return self.key("spool")

    @property
    def seen(self) -> str:  # set: the identities of the spooled items, until chunked
        return self.key("seen")

    @property
    def results(self) -> str:  # hash: index -> ChunkResult JSON
        return self.key("results")

    @property
    def completed(self) -> str:  # set of completed indexes
        return self.key("completed")

    @property
    def index_progress(self) -> str:  # hash: "<i>:processed", "<i>:succeeded" -> absolute counts
        return self.key("index_progress")

    @property
    def total_chunks(self) -> str:
        return self.key("total_chunks")

    @property
    def total_items(self) -> str:
        return self.key("total_items")

    @property
    def completed_chunks(self) -> str:
        return self.key("completed_chunks")

    @property
    def processed(self) -> str:
        return self.key("processed")

    @property
    def succeeded(self) -> str:
        return self.key("succeeded")

    @property
    def started_at(self) -> str:
        return self.key("started_at")

    @property
    def completed_at(self) -> str:
        return self.key("completed_at")

    @property
    def snapshot(self) -> str:  # JSON of the counters, rewritten on every change
        return self.key("snapshot")

    @property
    def events(self) -> str:  # pub/sub channel (not a key: no TTL, nothing to delete)
        return self.key("events")

    @property
    def slots(self) -> str:  # sorted set: lease holder -> lease end (fanout.slots)
        return self.key("slots")

    def all(self) -> list[str]:
        return [
            self.spool,
            self.seen,
            self.chunks,
            self.results,
            self.completed,
            self.index_progress,
            self.total_chunks,
            self.total_items,
            self.completed_chunks,
            self.processed,
            self.succeeded,
            self.started_at,
            self.completed_at,
            self.snapshot,
            self.slots,
            # A channel, never written as a key by the run's own code; but
            # the scripts declare it among their keys, so a worker's user
            # may name it, and cleanup deletes whatever it may have put there.
            self.events,
        ]

    def script_keys(self) -> list[str]:
        """KEYS[] of the scripts, in the order they index them."""
        return [
            self.results,
            self.completed,
            self.index_progress,
            self.total_chunks,
            self.completed_chunks,
            self.processed,
            self.succeeded,
            self.snapshot,
            self.events,
        ]


# Shared by both scripts: fold one index's absolute counts into the totals,
# rewrite the snapshot, publish it, and keep every key alive for ttl.
_LUA_COMMON = """
local results, completed, idx, total = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local done, processed, succeeded, snapshot, events = KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local index, ttl, now = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local verb = ARGV[4] == 'SPUBLISH' and 'SPUBLISH' or 'PUBLISH'  -- sharded on a cluster
if redis.call('EXISTS', total) == 0 then
  return redis.error_reply('STATELOST total_chunks is gone')
end
local function fold(field, value, key, only_up)
  local old = tonumber(redis.call('HGET', idx, index .. ':' .. field) or '0')
  if only_up and value <= old then return end
  redis.call('HSET', idx, index .. ':' .. field, value)
  redis.call('INCRBY', key, value - old)
end
local function publish(index_done)
  local snap = cjson.encode({
    total_chunks = tonumber(redis.call('GET', total)),
    completed_chunks = tonumber(redis.call('GET', done) or '0'),
    processed = tonumber(redis.call('GET', processed) or '0'),
    succeeded = tonumber(redis.call('GET', succeeded) or '0'),
    index = tonumber(index), index_completed = index_done, updated_at = tonumber(now)})
  redis.call('SET', snapshot, snap, 'EX', ttl)
  redis.call(verb, events, snap)
  for _, key in ipairs({results, completed, idx, total, done, processed, succeeded}) do
    redis.call('EXPIRE', key, ttl)
  end
end
"""

# ARGV: index, ttl, now, publish verb, processed, succeeded. Running counts only move up, and a
# completed index ignores stragglers (a pod the Job already replaced).
PROGRESS_SCRIPT = (
    _LUA_COMMON
    + """
if redis.call('SISMEMBER', completed, index) == 1 then return 0 end
fold('processed', tonumber(ARGV[5]), processed, true)
fold('succeeded', tonumber(ARGV[6]), succeeded, true)
publish(false)
return 1
"""
)

# ARGV: index, ttl, now, publish verb, processed, succeeded, result JSON. The final counts replace
# the running ones; the index is counted the first time only. Returns
# {1 if first completion else 0, completed_chunks}.
COMPLETE_SCRIPT = (
    _LUA_COMMON
    + """
redis.call('HSET', results, index, ARGV[7])
fold('processed', tonumber(ARGV[5]), processed, false)
fold('succeeded', tonumber(ARGV[6]), succeeded, false)
local first = redis.call('SADD', completed, index)
if first == 1 then redis.call('INCR', done) end
publish(true)
return {first, tonumber(redis.call('GET', done))}
"""
)


# ARGV: index, ttl, now, publish verb (unused), result JSON. Like completion, but the index stays
# open for its retry; refuses to resurrect a run whose keys were deleted.
SAVE_PARTIAL_SCRIPT = """
if redis.call('EXISTS', KEYS[4]) == 0 then
  return redis.error_reply('STATELOST total_chunks is gone')
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[5])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""


# KEYS: seen, spool. ARGV: ttl, then identity and item JSON, pair by pair.
# An item is appended unless one of its identity was spooled before;
# returns how many were.
SPOOL_SCRIPT = """
local added = 0
for i = 2, #ARGV, 2 do
  if redis.call('SADD', KEYS[1], ARGV[i]) == 1 then
    redis.call('RPUSH', KEYS[2], ARGV[i + 1])
    added = added + 1
  end
end
for _, key in ipairs(KEYS) do redis.call('EXPIRE', key, tonumber(ARGV[1])) end
return added
"""

# KEYS: spool, chunks. ARGV: index, size, ttl. The next ``size`` spooled
# items become chunk ``index`` (a JSON list); returns how many they were.
CHUNK_SCRIPT = """
local items = redis.call('LPOP', KEYS[1], tonumber(ARGV[2]))
if not items then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], '[' .. table.concat(items, ',') .. ']')
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[3]))
return #items
"""


def _is_state_lost(exc: Exception) -> bool:
    return "STATELOST" in str(exc)


class RunStore:
    """Operations on one run's keys; both the operator and the pods use it."""

    def __init__(
        self, redis: Redis, uid: str, ttl: int = DEFAULT_TTL_SECONDS, *, prefix: str
    ) -> None:
        self.redis = redis
        self.keys = RunKeys(uid, prefix)
        self.ttl = ttl
        self._publish = publish_verb(redis)  # the scripts' events: sharded on a cluster
        self._progress = redis.register_script(PROGRESS_SCRIPT)
        self._complete = redis.register_script(COMPLETE_SCRIPT)
        self._save_partial = redis.register_script(SAVE_PARTIAL_SCRIPT)
        self._spool = redis.register_script(SPOOL_SCRIPT)
        self._chunk = redis.register_script(CHUNK_SCRIPT)

    # --- operator side ----------------------------------------------------

    async def write_chunks(self, chunks: Iterable[Sequence[Any]]) -> int:
        """Store the chunks, then the counters; returns how many chunks.

        The chunks go in batches as they come (a generator keeps only one
        batch in memory: a run of 100,000 items is never held whole), each
        batch with its TTL; the totals, which mark the run as written, go
        last. Idempotent: a second call (an operator restarted mid-dispatch)
        writes the same chunks again and leaves counters that pods already
        moved alone (SET NX)."""
        k = self.keys
        now = time.time()
        count = items = size = 0
        batch: dict[FieldT, EncodableT] = {}

        async def flush() -> None:
            nonlocal size
            if batch:
                pipe = self.redis.pipeline(transaction=False)
                pipe.hset(k.chunks, mapping=batch)
                pipe.expire(k.chunks, self.ttl)
                await pipe.execute()
                batch.clear()
                size = 0

        for chunk in chunks:
            # Encoded here, so the client sends these bytes instead of a copy.
            value = json.dumps(list(chunk)).encode()
            batch[str(count)] = value
            count += 1
            items += len(chunk)
            size += len(value)
            if len(batch) >= CHUNK_WRITE_BATCH or size >= CHUNK_WRITE_BYTES:
                await flush()
        await flush()
        await self._written(count, items, now)
        return count

    async def _written(self, chunks: int, items: int, now: float) -> None:
        """The totals, which mark the run as written; counters that pods
        already moved are left alone (SET NX)."""
        k = self.keys
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(k.total_chunks, chunks, ex=self.ttl)
        pipe.set(k.total_items, items, ex=self.ttl)
        for counter in (k.completed_chunks, k.processed, k.succeeded):
            pipe.set(counter, 0, ex=self.ttl, nx=True)
        pipe.set(k.started_at, now, ex=self.ttl, nx=True)
        await pipe.execute()

    # A run's items may instead be spooled as they are found (a scrape of a
    # million candidates then never holds them in the operator), and cut
    # into chunks in Redis once their number, and so the chunk size, is known.

    async def spool(self, entries: Sequence[tuple[str, bytes]]) -> int:
        """Append the items (identity, item JSON) not spooled before; returns
        how many were new. Idempotent: an item given twice is kept once."""
        if not entries:
            return 0
        args: list[Any] = [self.ttl]
        for identity, item in entries:
            args += (identity, item)
        return int(await self._spool(keys=[self.keys.seen, self.keys.spool], args=args))

    async def spool_bytes(self) -> int:
        """What the spool holds in Redis (sampled), which its chunks replace;
        0 where this user may not ask (MEMORY is not every user's)."""
        try:
            used = [await self.redis.memory_usage(key) for key in (self.keys.spool, self.keys.seen)]
        except ResponseError:
            return 0
        return sum(int(u or 0) for u in used)

    async def chunk_spool(self, size: int) -> tuple[int, int]:
        """Cut the spool into chunks of ``size`` items, a chunk a call (Redis
        is busy a few milliseconds each), then write the totals; returns
        (items, chunks). Not repeatable: a run cut short is spooled again."""
        now = time.time()
        await self.redis.delete(self.keys.seen)
        keys = [self.keys.spool, self.keys.chunks]
        chunks = items = 0
        while taken := int(await self._chunk(keys=keys, args=[chunks, size, self.ttl])):
            chunks += 1
            items += taken
        await self._written(chunks, items, now)
        return items, chunks

    async def items_written(self) -> tuple[int, int] | None:
        """(items, chunks) if the chunks are already written, else None: a
        dispatch step that is repeated must not write them again."""
        items, chunks = await self.redis.mget(self.keys.total_items, self.keys.total_chunks)
        if items is None or chunks is None:
            return None
        return int(items), int(chunks)

    async def progress(self) -> Progress:
        """One round trip; raises StateLost when the run's keys are gone."""
        k = self.keys
        values = await self.redis.mget(
            k.total_chunks,
            k.completed_chunks,
            k.processed,
            k.succeeded,
            k.started_at,
            k.completed_at,
        )
        total, done, processed, succeeded, started, finished = values
        if total is None:
            raise StateLost(f"Redis has no state for run {self.keys.uid} (expired or lost)")
        return Progress(
            total_chunks=int(total),
            completed_chunks=int(done or 0),
            processed=int(processed or 0),
            succeeded=int(succeeded or 0),
            started_at=float(started) if started else None,
            completed_at=float(finished) if finished else None,
        )

    async def read_results(self) -> dict[int, ChunkResult]:
        """Every stored result, complete or partial, by index."""
        raw = await self.redis.hgetall(self.keys.results)
        return {int(i): ChunkResult.model_validate_json(v) for i, v in raw.items()}

    async def iter_results(self, batch: int = 64) -> AsyncIterator[tuple[int, StoredResult]]:
        """Every stored result by index, ``batch`` at a time, each read an
        outcome at a time: a merge that streams holds a few chunks' JSON,
        never the whole run, nor a whole chunk's outcomes."""
        indexes = sorted(int(i) for i in await self.redis.hkeys(self.keys.results))
        for start in range(0, len(indexes), batch):
            part = indexes[start : start + batch]
            raws = await self.redis.hmget(self.keys.results, [str(i) for i in part])
            for k, index in enumerate(part):
                raw, raws[k] = raws[k], None
                if raw is None:
                    continue
                stored = StoredResult(raw)
                del raw  # its text is the result's now: one copy held, not two
                yield index, stored

    async def mark_finished(self) -> None:
        await self.redis.set(self.keys.completed_at, time.time(), ex=self.ttl, nx=True)

    async def touch(self) -> None:
        """Keep every key alive for another TTL while the run is active."""
        pipe = self.redis.pipeline(transaction=False)
        for key in self.keys.all():
            pipe.expire(key, self.ttl)
        await pipe.execute()

    async def delete(self) -> int:
        return int(await self.redis.delete(*self.keys.all()))

    async def retire(self, ttl: int) -> None:
        """A run merged: its items and results (nearly all of its bytes) go
        now, its counters after ``ttl`` seconds (a late reader still finds
        how it ended)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.delete(self.keys.chunks, self.keys.results, self.keys.index_progress)
        for key in self.keys.all():
            pipe.expire(key, ttl)
        await pipe.execute()

    # --- pod side ---------------------------------------------------------

    async def read_chunk(self, index: int) -> tuple[list[Any], ChunkResult | None]:
        """The chunk's items and any result an earlier attempt left, in one
        round trip. Raises StateLost if the chunk is not there."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(self.keys.chunks, str(index))
        pipe.hget(self.keys.results, str(index))
        raw_chunk, raw_result = await pipe.execute()
        if raw_chunk is None:
            raise StateLost(
                f"chunk {index} of run {self.keys.uid} is not in Redis (expired, deleted, "
                "or Redis restarted without its data)"
            )
        previous = ChunkResult.model_validate_json(raw_result) if raw_result else None
        return json.loads(raw_chunk), previous

    async def report_progress(self, index: int, processed: int, succeeded: int) -> None:
        await self._run(self._progress, index, processed, succeeded)

    async def save_partial(self, result: ChunkResult) -> None:
        """Keep what an interrupted attempt did, without completing the index,
        so the retry resumes instead of starting over."""
        await self._run(self._save_partial, result.index, result.model_dump_json())

    async def complete(self, result: ChunkResult) -> bool:
        """Write the result and count the index once. True the first time."""
        first, _ = await self._run(
            self._complete,
            result.index,
            result.processed,
            result.succeeded,
            result.model_dump_json(),
        )
        return bool(first)

    async def _run(self, script: Any, index: int, *args: Any) -> Any:
        try:
            return await run_script(
                script,
                self.keys.script_keys(),
                [index, self.ttl, time.time(), self._publish, *args],
            )
        except Exception as exc:
            if _is_state_lost(exc):
                raise StateLost(
                    f"run {self.keys.uid} has no state in Redis (expired or lost)"
                ) from exc
            raise
