"""The pool of working proxies, kept in Redis: merge, pick, report, stats.

A ConfigMap holds at most 1 MiB (about 3,300 proxies), so the pool itself
lives in Redis under the keys of :class:`~proxyrefresh.pool_keys.PoolKeys`
and a ConfigMap is only a bounded export of its best entries. Every change
is one Lua script, so any number of consumers may report at once and two
refreshes may merge at once without losing an update (the legacy system
serialised this through an RLock and fcntl, seed 004).

Selection is fair by construction: each proxy waits in the index of its
group (protocol, anonymity, latency band) at a *virtual time*, the pick
takes the earliest among the groups the filters allow (O(log N) per group)
and moves it on by ``1/score``. With equal scores that is round robin; a
proxy scoring twice as high comes up twice as often.

Scoring (seed 002): a success scores x1.1 (at most 10), a failure x0.5;
three failures in a row or a score under 0.01 drop the proxy at once.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar, Unpack

from pydantic import BaseModel, ConfigDict

from proxyrefresh import redact
from proxyrefresh.api import Scoring
from proxyrefresh.models import Anonymity, Protocol
from proxyrefresh.pool_keys import PoolKeys
from proxyrefresh.redis_topology import publish_verb

if TYPE_CHECKING:
    from redis import Redis
    from redis.asyncio import Redis as AsyncRedis

# Latency bands (ms, upper bounds) of the selection index: a max-latency
# filter takes whole bands under it and scans only the band it falls in.
BANDS: tuple[float, ...] = (100, 250, 500, 1000, 2000, 4000, 8000, float("inf"))
SCAN_IN_BAND = 32  # members looked at in the one band a limit cuts through
MERGE_BATCH = 500  # results per merge script call
ENTRY_CACHE = 4096  # validated entries a pool client keeps, by their stored JSON


Outcome = tuple[str, bool, float | None]  # proxy URL, worked, latency ms


def scoring_args(scoring: Scoring) -> list[float]:
    """The scoring as the scripts take it (ARGV)."""
    return [
        scoring.success,
        scoring.failure,
        scoring.max_failures,
        scoring.min_score,
        scoring.max_score,
    ]


@dataclass(frozen=True)
class ReportRuns:
    """Outcomes as the report script applies them: runs of (proxy URL,
    worked, latency ms, how many), and each outcome's run."""

    runs: list[tuple[str, bool, float | None, int]]
    run_of: list[int]


def report_runs(outcomes: list[Outcome]) -> ReportRuns:
    """The outcomes as runs the report script applies, and each outcome's
    run. A proxy's successes with no failure of its own between them are
    one run (its last latency, how many), wherever they fall among other
    proxies' outcomes: a proxy's entry depends on its own outcomes only, so
    the pool ends as it would after each alone. The rotator reports every
    request, and a script call per outcome made Redis its costliest part.
    PoolError for an outcome that names no proxy URL."""
    runs: list[tuple[str, bool, float | None, int]] = []
    run_of: list[int] = []
    open_run: dict[str, int] = {}  # by identity: a proxy's run of successes still growing
    for proxy, ok, latency_ms in outcomes:
        if "://" not in proxy:
            raise PoolError(f"{proxy!r} is not a proxy URL (scheme://host:port)")
        key = identity(proxy)
        at = open_run.get(key) if ok else None
        if at is None:
            at = len(runs)
            runs.append((proxy, ok, latency_ms, 1))
        else:
            _, _, latency, times = runs[at]
            runs[at] = (proxy, True, latency if latency_ms is None else latency_ms, times + 1)
        if ok:
            open_run[key] = at
        else:
            open_run.pop(key, None)
        run_of.append(at)
    return ReportRuns(runs, run_of)


class PoolEntry(BaseModel):
    """One proxy in the pool, as stored, listed and exported (frozen: one
    entry object may be shared by every request it is picked for)."""

    model_config = ConfigDict(frozen=True)

    proxy: str  # the whole URL, credentials included (the store is not world-readable)
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

    @functools.cached_property
    def id(self) -> str:
        """Worked out once: a busy rotator asks an entry for it several times a request."""
        return identity(self.proxy)


class PoolError(RuntimeError):
    """A pool operation that cannot be done as asked (the CLI maps it to an exit code)."""


class NotInPool(PoolError):
    """A report for a proxy the pool does not hold (never added, or dropped)."""


class NoMatch(PoolError):
    """No proxy in the pool passes the filters."""


def identity(url: str) -> str:
    """A pool entry's key: scheme, user name, host and port, no password
    (``socks5://user:***@host:port``): gateways pick exits by user name,
    and a list may repeat a proxy with its password changed."""
    return redact.url(url)


def band(latency_ms: float | None) -> int:
    if latency_ms is None:
        return len(BANDS) - 1
    return next(i for i, upper in enumerate(BANDS) if latency_ms < upper)


def group_name(protocol: Protocol, anonymity: Anonymity, latency_ms: float | None) -> str:
    return f"{protocol.value}:{anonymity.value}:{band(latency_ms)}"


@functools.lru_cache(maxsize=256)
def groups_for(
    protocol: Protocol | None = None,
    min_anonymity: Anonymity | None = None,
    max_latency_ms: float | None = None,
) -> tuple[list[str], list[str]]:
    """The groups a pick may take from: (whole groups, groups to scan for
    the latency limit). Pure, so the filter logic is tested without Redis;
    cached, as a rotator asks it for every request (callers must not
    change the lists)."""
    protocols = [protocol] if protocol else list(Protocol)
    levels = [a for a in Anonymity if min_anonymity is None or a.at_least(min_anonymity)]
    whole: list[str] = []
    scan: list[str] = []
    for i, upper in enumerate(BANDS):
        lower = BANDS[i - 1] if i else 0.0
        if max_latency_ms is not None and lower > max_latency_ms:
            continue
        partial = max_latency_ms is not None and upper > max_latency_ms
        for p in protocols:
            for a in levels:
                (scan if partial else whole).append(f"{p.value}:{a.value}:{i}")
    return whole, scan


def all_groups() -> list[str]:
    return groups_for()[0]


# --- the scripts -----------------------------------------------------------

# KEYS: entries, score, failing, last_ok, latency, merged, clock, events.
_LUA_COMMON = """
local entries, score, failing, last_ok, latency = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local merged, clock, events = KEYS[6], KEYS[7], KEYS[8]
local function remove(id, e)
  redis.call('HDEL', entries, id)
  redis.call('ZREM', score, id)
  redis.call('SREM', failing, id)
  redis.call('ZREM', last_ok, id)
  redis.call('ZREM', latency, id)
  redis.call('ZREM', e.group_key, id)
end
local function failed(id, e, now, failure, max_failures, min_score)
  e.score = e.score * failure
  e.failures = e.failures + 1
  e.last_checked = now
  if e.failures >= max_failures or e.score < min_score then
    remove(id, e)
    return 'removed'
  end
  redis.call('HSET', entries, id, cjson.encode(e))
  redis.call('ZADD', score, e.score, id)
  redis.call('SADD', failing, id)
  return 'failed'
end
local function counts()
  local size = redis.call('ZCARD', score)
  return size, size - redis.call('SCARD', failing)
end
local function announce(verb, message)  -- sharded on a cluster (redis_topology.publish_verb)
  redis.call(verb == 'SPUBLISH' and 'SPUBLISH' or 'PUBLISH', events, cjson.encode(message))
end
"""

# ARGV: uid, batch, now, success, failure, max_failures, min_score, max_score,
# then per result: id, passing (1/0), entry JSON (or ''), group key (or '').
# Batches are applied in order and remembered, so a merge repeated after an
# operator restart skips what it already did. Returns {applied, size, usable}.
MERGE_SCRIPT = (
    _LUA_COMMON
    + """
local uid, batch, now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local success, failure, max_failures = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local min_score, max_score = tonumber(ARGV[7]), tonumber(ARGV[8])
local done = redis.call('HGET', merged, uid)
if done == 'done' or (done and tonumber(done) > batch) then
  local size, usable = counts()
  return {0, size, usable}
end
local at = tonumber(redis.call('GET', clock) or '0')
for i = 9, #ARGV, 4 do
  local id, passing, fresh, group_key = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local raw = redis.call('HGET', entries, id)
  local old = raw and cjson.decode(raw)
  if old then old.score = tonumber(redis.call('ZSCORE', score, id)) or old.score end
  if passing == '1' then
    local e = cjson.decode(fresh)
    local turn = at
    if old then
      e.score = math.min(max_score, old.score * success)
      turn = tonumber(redis.call('ZSCORE', old.group_key, id) or at)
      if old.group_key ~= group_key then redis.call('ZREM', old.group_key, id) end
    else
      e.score = 1.0
    end
    e.failures, e.last_checked, e.last_ok, e.group_key = 0, now, now, group_key
    redis.call('HSET', entries, id, cjson.encode(e))
    redis.call('ZADD', score, e.score, id)
    redis.call('SREM', failing, id)
    redis.call('ZADD', last_ok, now, id)
    local lat = e.latency_ms
    if lat == nil or lat == cjson.null then lat = 1e12 end
    redis.call('ZADD', latency, lat, id)
    redis.call('ZADD', group_key, turn, id)
  elseif old then
    failed(id, old, now, failure, max_failures, min_score)
  end
end
redis.call('HSET', merged, uid, batch + 1)
local size, usable = counts()
return {1, size, usable}
"""
)

# ARGV: uid, now, max_age (0: none), ttl, announce (the publish verb, or 0). Marks the merge
# done, drops what has not been confirmed within max_age, keeps every key
# for another ttl, and (announce) tells subscribers the new size. Returns
# {size, usable, expired}.
FINISH_SCRIPT = (
    _LUA_COMMON
    + """
local uid, now, max_age, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('HSET', merged, uid, 'done')
local expired = 0
if max_age > 0 then
  local old = redis.call('ZRANGEBYSCORE', last_ok, '-inf', now - max_age)
  for _, id in ipairs(old) do
    local raw = redis.call('HGET', entries, id)
    if raw then remove(id, cjson.decode(raw)) end
    expired = expired + 1
  end
end
for i = 1, 7 do redis.call('EXPIRE', KEYS[i], ttl) end
for i = 9, #KEYS do redis.call('EXPIRE', KEYS[i], ttl) end
local size, usable = counts()
if ARGV[5] ~= '0' then announce(ARGV[5], {size = size, usable = usable, merged = uid}) end
return {size, usable, expired}
"""
)

# ARGV: now, the scoring, the publish verb, then per run of outcomes: id, ok
# (1/0), latency ms (or ''), how many (successes in a row of one proxy come
# as one run: ``report_runs``; a failure is a run of one).
# Applies the runs in order, in one call (a busy reporter sends what
# queued meanwhile). Returns per run {outcome, size, usable, score,
# failures}; outcome 'missing' if the proxy is not in the pool. A change of
# usable is published once, for the operator.
REPORT_SCRIPT = (
    _LUA_COMMON
    + """
local now = tonumber(ARGV[1])
local success, failure, max_failures = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local min_score, max_score = tonumber(ARGV[5]), tonumber(ARGV[6])
local _, before = counts()
local out = {}
for i = 8, #ARGV, 4 do
  local id, ok, latency, times = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  local raw = redis.call('HGET', entries, id)
  if not raw then
    local size, usable = counts()
    out[#out + 1] = {'missing', size, usable, 0, 0}
  else
    local e = cjson.decode(raw)
    e.score = tonumber(redis.call('ZSCORE', score, id)) or e.score  -- full precision
    local outcome
    if ok == '1' then
      for _ = 1, times do e.score = math.min(max_score, e.score * success) end
      e.failures, e.last_checked, e.last_ok = 0, now, now
      if latency ~= '' then e.reported_latency_ms = tonumber(latency) end
      redis.call('HSET', entries, id, cjson.encode(e))
      redis.call('ZADD', score, e.score, id)
      redis.call('SREM', failing, id)
      redis.call('ZADD', last_ok, now, id)
      outcome = 'ok'
    else
      outcome = failed(id, e, now, failure, max_failures, min_score)
    end
    local size, usable = counts()
    local kept = redis.call('ZSCORE', score, id) or tostring(e.score)
    out[#out + 1] = {outcome, size, usable, kept, e.failures}
  end
end
local size, usable = counts()
if usable ~= before then announce(ARGV[7], {size = size, usable = usable}) end
return out
"""
)

# KEYS: entries, clock, then the whole groups, then the groups to scan.
# ARGV: how many whole groups, max latency (or ''), scan limit, how many
# picks. Each pick: the member with the earliest turn wins and moves on by
# 1/score, so the picks of one call take their turns as that many calls
# would. Returns the winners' JSON in order (none: no member matches).
PICK_SCRIPT = """
local entries, clock = KEYS[1], KEYS[2]
local whole, limit, scan = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local count = tonumber(ARGV[4] or '1')
local now = tonumber(redis.call('GET', clock) or '0')
local picked = {}
-- Each member's entry is read and decoded once a call: a batch picks the
-- same few members over and over.
local known = {}
local function entry(id)
  local k = known[id]
  if not k then
    local raw = redis.call('HGET', entries, id)
    k = {raw, cjson.decode(raw)}
    known[id] = k
  end
  return k[1], k[2]
end
for _ = 1, count do
  local best_id, best_turn, best_key
  for i = 3, #KEYS do
    local key = KEYS[i]
    if i - 2 <= whole then
      local r = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
      if r[1] and (not best_turn or tonumber(r[2]) < best_turn) then
        best_id, best_turn, best_key = r[1], tonumber(r[2]), key
      end
    else
      local r = redis.call('ZRANGE', key, 0, scan - 1, 'WITHSCORES')
      for j = 1, #r, 2 do
        local turn = tonumber(r[j + 1])
        if best_turn and turn >= best_turn then break end
        local _, e = entry(r[j])
        if e.latency_ms ~= nil and e.latency_ms ~= cjson.null and e.latency_ms <= limit then
          best_id, best_turn, best_key = r[j], turn, key
          break
        end
      end
    end
  end
  if not best_id then break end
  local raw, e = entry(best_id)
  -- A member that waited out of reach of the filters starts from now, not
  -- from its old turn: it gets its share from here on, not a burst.
  now = math.max(best_turn, now)
  redis.call('ZADD', best_key, now + 1.0 / math.max(e.score, 1e-6), best_id)
  picked[#picked + 1] = raw
end
if #picked > 0 then redis.call('SET', clock, now) end
return picked
"""

# KEYS: a session, entries. The entry of the member the session keeps, or
# nothing (none kept, or it left the pool: then the session is let go).
SESSION_SCRIPT = """
local id = redis.call('GET', KEYS[1])
if not id then return false end
local raw = redis.call('HGET', KEYS[2], id)
if not raw then redis.call('DEL', KEYS[1]) end
return raw
"""

# KEYS: a session. ARGV: the member id it should no longer keep. Let go only
# if it still keeps that one (another process may have moved it on).
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: score, failing, then every group. Returns {size, usable, count per group...}.
STATS_SCRIPT = """
local out = {redis.call('ZCARD', KEYS[1])}
out[2] = out[1] - redis.call('SCARD', KEYS[2])
for i = 3, #KEYS do out[i] = redis.call('ZCARD', KEYS[i]) end
return out
"""


# --- what the scripts are called with, and what their answers mean ----------


@dataclass(frozen=True)
class PoolStats:
    size: int
    usable: int
    protocols: dict[str, int] = field(default_factory=dict)
    anonymity: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "usable": self.usable,
            "protocols": self.protocols,
            "anonymity": self.anonymity,
        }


@dataclass(frozen=True)
class Report:
    outcome: str  # ok, failed, removed
    size: int
    usable: int
    score: float
    failures: int


@dataclass(frozen=True)
class MergeOutcome:
    size: int
    usable: int
    expired: int
    already: bool  # this refresh had been merged before: nothing changed


@dataclass(frozen=True)
class LastMerge:
    """The last refresh merged into a pool, and how many of the pool's
    entries its export holds: what the ProxyPool's status says of it."""

    refresh: str
    at: str  # RFC 3339
    exported: int


# Its field in the pool's ``merged`` hash, beside the runs' uids (a uid is
# never this word).
LAST_MERGE = "last"


@dataclass(frozen=True)
class PickFilter:
    protocol: Protocol | None = None
    min_anonymity: Anonymity | None = None
    max_latency_ms: float | None = None

    @classmethod
    def of(
        cls,
        protocol: Protocol | str | None = None,
        min_anonymity: Anonymity | str | None = None,
        max_latency_ms: float | None = None,
    ) -> PickFilter:
        """The filters as a caller writes them: an enum member or its value
        ("socks5", "elite"); a value that is neither is a ValueError naming
        the filter and what it may be."""
        return cls(
            _member(Protocol, "protocol", protocol),
            _member(Anonymity, "min_anonymity", min_anonymity),
            max_latency_ms,
        )


class Filters(TypedDict, total=False):
    """What get and lease take: the fields of a PickFilter, each an enum
    member or its value (typed, so mypy catches a misspelt filter)."""

    protocol: Protocol | str | None
    min_anonymity: Anonymity | str | None
    max_latency_ms: float | None


E = TypeVar("E", Protocol, Anonymity)


def _member(kind: type[E], name: str, value: E | str | None) -> E | None:
    if value is None or isinstance(value, kind):
        return value
    try:
        return kind(str(value).lower())
    except ValueError:
        allowed = ", ".join(m.value for m in kind)
        raise ValueError(f"{name} must be one of {allowed}, not {value!r}") from None


class _Calls:
    """Keys and arguments of every script call, and the parsing of the
    answers: shared by the sync and asyncio pools, which differ only in how
    they wait."""

    def __init__(
        self, namespace: str, name: str, scoring: Scoring | None, publish: str = "PUBLISH"
    ) -> None:
        self.publish = publish  # redis_topology.publish_verb
        self._entries: dict[str | bytes, PoolEntry] = {}
        self.keys = PoolKeys(namespace, name)
        self.scoring = scoring or Scoring()
        self.namespace, self.name = namespace, name

    def merge_args(self, uid: str, number: int, now: float, batch: list[Any]) -> list[Any]:
        return [uid, number, now, *scoring_args(self.scoring), *batch]

    def merge_item(self, url: str, passing: bool, entry: PoolEntry | None) -> list[str]:
        """One result as the merge script takes it: id, passing, entry, group key."""
        if passing and entry is not None:
            name = group_name(entry.protocol, entry.anonymity, entry.latency_ms)
            return [identity(url), "1", entry.model_dump_json(), self.keys.group(name)]
        return [identity(url), "0", "", ""]

    def group_keys(self) -> list[str]:
        return [self.keys.group(g) for g in all_groups()]

    def finish_args(
        self, uid: str, now: float, max_age: float | None, ttl: int, announce: bool = True
    ) -> list[Any]:
        return [uid, now, max_age or 0, ttl, self.publish if announce else 0]

    def report_args(self, runs: ReportRuns) -> list[Any]:
        args: list[Any] = [time.time(), *scoring_args(self.scoring), self.publish]
        for proxy, ok, latency_ms, times in runs.runs:
            latency = "" if latency_ms is None else repr(float(latency_ms))
            args += [identity(proxy), "1" if ok else "0", latency, times]
        return args

    def parse_reports(self, runs: ReportRuns, raw: list[Any]) -> list[Report | PoolError]:
        """Each outcome's Report (its run's), or the NotInPool of a proxy
        the pool does not hold."""
        results: list[Report | PoolError] = []
        for (proxy, *_), one in zip(runs.runs, raw, strict=True):
            try:
                results.append(self.parse_report(proxy, one))
            except PoolError as exc:
                results.append(exc)
        return [results[i] for i in runs.run_of]

    def parse_report(self, proxy: str, raw: list[Any]) -> Report:
        outcome = _text(raw[0])
        if outcome == "missing":
            raise NotInPool(f"{identity(proxy)} is not in pool {self.namespace}/{self.name}")
        return Report(outcome, int(raw[1]), int(raw[2]), float(_text(raw[3])), int(raw[4]))

    def pick_call(
        self, flt: PickFilter, occupied: frozenset[str] | None = None, count: int = 1
    ) -> tuple[list[str], list[Any]]:
        """The pick's keys and arguments; ``occupied`` (the groups known to
        have members) leaves out the empty ones, which cost a call nothing
        but its size: without a filter a pick names every group."""
        whole, scan = groups_for(flt.protocol, flt.min_anonymity, flt.max_latency_ms)
        if occupied is not None:
            whole = [g for g in whole if g in occupied]
            scan = [g for g in scan if g in occupied]
        keys = [self.keys.entries, self.keys.clock]
        keys += [self.keys.group(g) for g in whole + scan]
        limit = "" if flt.max_latency_ms is None else flt.max_latency_ms
        return keys, [len(whole), limit, SCAN_IN_BAND, count]

    def parse_picks(self, raw: Any, flt: PickFilter) -> list[PoolEntry]:
        """The picks, in order; NoMatch if there are none."""
        if not raw:
            raise NoMatch(f"no proxy in pool {self.namespace}/{self.name} {describe(flt)}")
        return [self.entry(text) for text in raw]

    def entry(self, raw: str | bytes) -> PoolEntry:
        """The entry stored as ``raw``. A busy picker sees the same few
        entries over and over: each is validated once and then shared (an
        entry is frozen), until the pool's scores move it on."""
        entry = self._entries.get(raw)
        if entry is None:
            if len(self._entries) >= ENTRY_CACHE:
                self._entries.clear()
            entry = self._entries[raw] = PoolEntry.model_validate_json(raw)
        return entry

    def stats_keys(self) -> list[str]:
        return [self.keys.score, self.keys.failing, *self.group_keys()]

    def parse_stats(self, raw: list[Any]) -> PoolStats:
        protocols: dict[str, int] = {}
        anonymity: dict[str, int] = {}
        for group, count in zip(all_groups(), raw[2:], strict=True):
            protocol, level, _ = group.split(":")
            protocols[protocol] = protocols.get(protocol, 0) + int(count)
            anonymity[level] = anonymity.get(level, 0) + int(count)
        return PoolStats(int(raw[0]), int(raw[1]), protocols, anonymity)


MergeItem = tuple[str, bool, PoolEntry | None]


async def _aiter(items: Iterable[MergeItem] | AsyncIterable[MergeItem]) -> AsyncIterator[MergeItem]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


def describe(flt: PickFilter) -> str:
    parts = []
    if flt.protocol:
        parts.append(f"protocol {flt.protocol.value}")
    if flt.min_anonymity:
        parts.append(f"anonymity {flt.min_anonymity.value} or better")
    if flt.max_latency_ms is not None:
        parts.append(f"latency at most {flt.max_latency_ms:g} ms")
    return "matches " + ", ".join(parts) if parts else "is left"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entries(ranked: Any, raw: Any) -> list[PoolEntry]:
    """Entries with their scores from the index (exact: JSON keeps 14 digits)."""
    if not ranked:
        return []
    return [
        PoolEntry.model_validate_json(r).model_copy(update={"score": float(score)})
        for (_, score), r in zip(ranked, raw, strict=True)
        if r
    ]


class _Scripts:
    """The scripts, registered on either kind of client (both hash them
    once and fall back from EVALSHA to EVAL by themselves)."""

    def __init__(
        self, redis: Any, name: str, namespace: str = "default", scoring: Scoring | None = None
    ) -> None:
        self.calls = _Calls(namespace, name, scoring, publish_verb(redis))
        self._report = redis.register_script(REPORT_SCRIPT)
        self._pick = redis.register_script(PICK_SCRIPT)
        self._stats = redis.register_script(STATS_SCRIPT)
        self._merge = redis.register_script(MERGE_SCRIPT)
        self._finish = redis.register_script(FINISH_SCRIPT)
        self._session = redis.register_script(SESSION_SCRIPT)
        self._release = redis.register_script(RELEASE_SCRIPT)


class Pool(_Scripts):
    """A pool, for scripts and scrapers (blocking redis-py)::

    pool = Pool(Redis.from_url(url), "default", namespace="proxies")
    with pool.lease(min_anonymity="elite") as proxy:
        requests.get(target, proxies={"https": proxy.proxy})
    """

    def __init__(
        self, redis: Redis, name: str, namespace: str = "default", scoring: Scoring | None = None
    ) -> None:
        super().__init__(redis, name, namespace, scoring)
        self.redis = redis

    def get(self, **filters: Unpack[Filters]) -> PoolEntry:
        """The next proxy that passes the filters; NoMatch if none does."""
        flt = PickFilter.of(**filters)
        keys, args = self.calls.pick_call(flt)
        return self.calls.parse_picks(self._pick(keys=keys, args=args), flt)[0]

    def report(self, proxy: str, ok: bool, latency_ms: float | None = None) -> Report:
        runs = report_runs([(proxy, ok, latency_ms)])
        raw = self._report(keys=self.calls.keys.fixed(), args=self.calls.report_args(runs))
        return self.calls.parse_report(proxy, raw[0])

    @contextmanager
    def lease(self, **filters: Unpack[Filters]) -> Iterator[PoolEntry]:
        """A proxy that reports by itself: success (with the time the block
        took) when the block ends, failure when it raises."""
        entry = self.get(**filters)
        started = time.monotonic()
        try:
            yield entry
        except BaseException:
            self.report(entry.proxy, False)
            raise
        self.report(entry.proxy, True, (time.monotonic() - started) * 1000)

    def stats(self) -> PoolStats:
        return self.calls.parse_stats(self._stats(keys=self.calls.stats_keys()))

    def exists(self) -> bool:
        """Whether anything ever merged into it (an empty pool still exists)."""
        k = self.calls.keys
        return bool(self.redis.exists(k.merged, k.entries))

    def entries(self, limit: int | None = None) -> list[PoolEntry]:
        """The best entries first (highest score)."""
        k = self.calls.keys
        ranked: Any = self.redis.zrevrange(k.score, 0, -1 if limit is None else limit - 1, True)
        if not ranked:  # HMGET of no fields is an error, not an empty answer
            return []
        return _entries(ranked, self.redis.hmget(k.entries, [i for i, _ in ranked]))


class AsyncPool(_Scripts):
    """The same pool for asyncio code (redis.asyncio); the operator merges through it."""

    def __init__(
        self,
        redis: AsyncRedis,
        name: str,
        namespace: str = "default",
        scoring: Scoring | None = None,
    ) -> None:
        super().__init__(redis, name, namespace, scoring)
        self.redis = redis

    async def get(
        self, occupied: frozenset[str] | None = None, **filters: Unpack[Filters]
    ) -> PoolEntry:
        """As :meth:`Pool.get`; ``occupied``: see :meth:`occupied`."""
        return (await self.get_many(1, occupied, **filters))[0]

    async def get_many(
        self, count: int, occupied: frozenset[str] | None = None, **filters: Unpack[Filters]
    ) -> list[PoolEntry]:
        """The next ``count`` picks (fewer only if fewer members match; at
        least one, else NoMatch) in one round trip: a busy picker (the
        rotator) draws ahead in batches instead of a round trip a request."""
        flt = PickFilter.of(**filters)
        keys, args = self.calls.pick_call(flt, occupied, count)
        return self.calls.parse_picks(await self._pick(keys=keys, args=args), flt)

    async def occupied(self) -> frozenset[str]:
        """The groups that have members now. A frequent picker (the rotator)
        refreshes this every second and passes it to :meth:`get`, so a pick
        names only those groups (a group filled since is seen at the next
        refresh)."""
        raw = await self._stats(keys=self.calls.stats_keys())
        return frozenset(g for g, n in zip(all_groups(), raw[2:], strict=True) if int(n))

    async def report(self, proxy: str, ok: bool, latency_ms: float | None = None) -> Report:
        result = (await self.report_many([(proxy, ok, latency_ms)]))[0]
        if isinstance(result, PoolError):
            raise result
        return result

    async def report_many(self, outcomes: list[Outcome]) -> list[Report | PoolError]:
        """Several reports in one script call: what a busy reporter (the
        rotator) sends. They are applied in order; a proxy no longer in the
        pool gets its NotInPool."""
        runs = report_runs(outcomes)  # once: for the call and to read its answer
        raw = await self._report(keys=self.calls.keys.fixed(), args=self.calls.report_args(runs))
        return self.calls.parse_reports(runs, raw)

    @asynccontextmanager
    async def lease(self, **filters: Unpack[Filters]) -> AsyncIterator[PoolEntry]:
        entry = await self.get(**filters)
        started = time.monotonic()
        try:
            yield entry
        except BaseException:
            await self.report(entry.proxy, False)
            raise
        await self.report(entry.proxy, True, (time.monotonic() - started) * 1000)

    async def stats(self) -> PoolStats:
        return self.calls.parse_stats(await self._stats(keys=self.calls.stats_keys()))

    async def entries(self, limit: int | None = None) -> list[PoolEntry]:
        k = self.calls.keys
        ranked: Any = await self.redis.zrevrange(
            k.score, 0, -1 if limit is None else limit - 1, True
        )
        if not ranked:  # as Pool.entries
            return []
        return _entries(ranked, await self.redis.hmget(k.entries, [i for i, _ in ranked]))

    async def merge(
        self,
        uid: str,
        results: Iterable[MergeItem] | AsyncIterable[MergeItem],
        ttl: int,
        max_age_seconds: float | None = None,
        now: float | None = None,
        announce: bool = True,
    ) -> MergeOutcome:
        """Merge one refresh's results (proxy URL, passing, entry), in batches
        of MERGE_BATCH; idempotent per refresh ``uid``, batch by batch, so a
        merge cut short by a restart resumes without counting anything
        twice (the batches are the same when the results are). ``results``
        may be an async iterable: a run of any size streams through. Without
        ``announce`` the pool's channel hears of it only from
        :meth:`note_merge`, so its subscribers see the merge and its export
        at once."""
        now = time.time() if now is None else now
        keys = self.calls.keys.fixed()
        applied, number, batch = 0, 0, []
        async for url, passing, entry in _aiter(results):
            batch += self.calls.merge_item(url, passing, entry)
            if len(batch) >= 4 * MERGE_BATCH:
                first, _, _ = await self._merge(
                    keys=keys, args=self.calls.merge_args(uid, number, now, batch)
                )
                applied, number, batch = applied + int(first), number + 1, []
        if batch or number == 0:
            first, _, _ = await self._merge(
                keys=keys, args=self.calls.merge_args(uid, number, now, batch)
            )
            applied += int(first)
        size, usable, expired = await self._finish(
            keys=[*keys, *self.calls.group_keys()],
            args=self.calls.finish_args(uid, now, max_age_seconds, ttl, announce),
        )
        return MergeOutcome(int(size), int(usable), int(expired), already=applied == 0)

    async def merged(self, uid: str) -> bool:
        return _text(await self.redis.hget(self.calls.keys.merged, uid) or "") == "done"

    async def note_merge(self, last: LastMerge) -> None:
        """Record the refresh that merged last, and wake the pool's loop: it
        puts this in the ProxyPool's status, which nothing else writes."""
        k = self.calls.keys
        record = json.dumps(dataclasses.asdict(last))
        await self.redis.hset(k.merged, LAST_MERGE, record)
        # Then the wake, apart: a cluster client pipelines no PUBLISH.
        wake = json.dumps({"merged": last.refresh})
        await self.redis.execute_command(self.calls.publish, k.events, wake)  # type: ignore[no-untyped-call]

    # --- sticky sessions: shared by every rotator process of the pool -------

    async def session(self, name: str) -> PoolEntry | None:
        """The member session ``name`` keeps, if any and still in the pool."""
        keys = [self.calls.keys.session(name), self.calls.keys.entries]
        raw = await self._session(keys=keys)
        return self.calls.entry(raw) if raw else None

    async def hold_session(self, name: str, entry: PoolEntry, seconds: float) -> None:
        """Session ``name`` keeps ``entry`` for ``seconds`` from now."""
        await self.redis.set(self.calls.keys.session(name), entry.id, px=int(seconds * 1000))

    async def release_session(self, name: str, entry: PoolEntry) -> None:
        """Session ``name`` no longer keeps ``entry`` (it failed)."""
        await self._release(keys=[self.calls.keys.session(name)], args=[entry.id])

    async def last_merge(self) -> LastMerge | None:
        raw = await self.redis.hget(self.calls.keys.merged, LAST_MERGE)
        if not raw:
            return None
        try:
            return LastMerge(**json.loads(raw))
        except (ValueError, TypeError):  # not ours: as if none was recorded
            return None

    async def delete(self) -> int:
        k = self.calls.keys
        return int(await self.redis.delete(*k.fixed()[:7], *self.calls.group_keys()))
