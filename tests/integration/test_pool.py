"""The pool in Redis: merge, feedback, selection and the CLI, against a real
redis-server (and real processes reporting at once)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import cast

import pytest
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from proxyrefresh.api import Scoring
from proxyrefresh.models import Anonymity, Protocol
from proxyrefresh.operator import merge
from proxyrefresh.pool import (
    AsyncPool,
    NoMatch,
    NotInPool,
    Pool,
    PoolEntry,
)
from tests.conftest import run_cli
from tests.harness.testbed import RedisServer
from tests.unit.test_operator_logic import found, merged, row

pytestmark = pytest.mark.integration
TTL = 3600


@pytest.fixture
def sredis(redis_server: RedisServer) -> Iterator[Redis]:
    with Redis.from_url(redis_server.url, decode_responses=True) as client:
        yield client


@pytest.fixture
def name() -> str:
    return f"p{uuid.uuid4().hex[:8]}"


def entry(
    port: int, protocol: str = "http", anonymity: str = "elite", latency: float = 100
) -> PoolEntry:
    return PoolEntry(
        proxy=f"{protocol}://127.0.0.1:{port}",
        protocol=Protocol(protocol),
        host="127.0.0.1",
        port=port,
        anonymity=Anonymity(anonymity),
        latency_ms=latency,
        last_checked=1.0,
        last_ok=1.0,
    )


async def fill(pool: AsyncPool, entries: list[PoolEntry], uid: str = "seed") -> None:
    await pool.merge(uid, [(e.proxy, True, e) for e in entries], TTL)


def by_proxy(entries: list[PoolEntry]) -> dict[str, PoolEntry]:
    return {e.proxy: e for e in entries}


async def test_merges_follow_the_legacy_scoring(redis: AsyncRedis, name: str) -> None:
    pool = AsyncPool(redis, name)
    await pool.merge(
        "r1", merged(found(row(1, True, "elite", 300), row(2, True, "elite", 100))), TTL
    )
    got = by_proxy(await pool.entries())
    assert [e.proxy for e in merge.ordered(got.values())] == [
        "http://1.1.1.1:2",
        "http://1.1.1.1:1",
    ]
    assert got["http://1.1.1.1:1"].score == 1.0
    await pool.merge("r2", merged(found(row(1, True, "elite"), row(2, False))), TTL)
    got = by_proxy(await pool.entries())
    assert got["http://1.1.1.1:1"].score == pytest.approx(1.1)
    assert (got["http://1.1.1.1:2"].score, got["http://1.1.1.1:2"].failures) == (0.5, 1)
    await pool.merge("r3", merged(found(row(2, False))), TTL)
    assert "http://1.1.1.1:1" in by_proxy(await pool.entries())  # not checked this time: untouched
    outcome = await pool.merge("r4", merged(found(row(2, False))), TTL)
    assert "http://1.1.1.1:2" not in by_proxy(await pool.entries())  # third failure in a row
    assert (outcome.size, outcome.usable) == (1, 1)
    # A refresh merged again (an operator restarted mid-merge) changes nothing.
    again = await pool.merge("r2", merged(found(row(1, True, "elite"))), TTL)
    assert again.already
    assert by_proxy(await pool.entries())["http://1.1.1.1:1"].score == pytest.approx(1.1)
    text = merge.render(await pool.entries())[merge.TXT_KEY]
    assert text == "http://1.1.1.1:1\n"


async def test_a_merge_cut_short_resumes_without_counting_twice(
    redis: AsyncRedis, name: str
) -> None:
    pool = AsyncPool(redis, name)
    rows = [row(port, True, "elite") for port in range(1, 1201)]  # three batches
    await pool.merge("seed", merged(found(*rows)), TTL)

    def cut_short() -> Iterator[tuple[str, bool, PoolEntry | None]]:
        for i, item in enumerate(merged(found(*rows))):
            if i == 700:  # the operator dies in the second batch
                raise RuntimeError("killed")
            yield item

    with pytest.raises(RuntimeError):
        await pool.merge("again", cut_short(), TTL)
    assert not await pool.merged("again")
    outcome = await pool.merge("again", merged(found(*rows)), TTL)
    assert not outcome.already
    assert await pool.merged("again")
    scores = {e.port: e.score for e in await pool.entries()}
    assert len(scores) == 1200
    assert set(scores.values()) == {1.1}  # every proxy counted once (1.0 x 1.1, exactly)


async def test_low_scores_and_old_entries_leave(redis: AsyncRedis, name: str) -> None:
    pool = AsyncPool(redis, name, scoring=Scoring(failure=0.001))
    await pool.merge("r0", merged(found(row(1, True, "elite"), row(2, True, "elite"))), TTL)
    await pool.merge("r1", merged(found(row(1, False))), TTL)  # 1.0 x 0.001 < 0.01
    assert [e.port for e in await pool.entries()] == [2]
    outcome = await pool.merge("r2", [], TTL, max_age_seconds=60, now=1e10)
    assert (outcome.size, outcome.expired) == (0, 1)


async def test_a_pool_that_nothing_passed_into_is_empty_not_an_error(
    redis: AsyncRedis, sredis: Redis, name: str
) -> None:
    """A first refresh in which every candidate is dead makes a pool with no
    entries: its export is empty (an operator that asked Redis for the
    entries of no ids would take the refusal for an outage and retry the
    merge forever), and so is what a consumer lists."""
    pool = AsyncPool(redis, name)
    outcome = await pool.merge("r1", merged(found(row(1, False), row(2, False))), TTL)
    assert (outcome.size, outcome.usable) == (0, 0)
    assert await pool.entries(limit=100) == []
    assert merge.render(merge.fit(await pool.entries(), 8192))[merge.TXT_KEY] == ""
    assert Pool(sredis, name).exists()
    assert Pool(sredis, name).entries() == []


async def test_credentials_are_identity_and_stay_out_of_the_export(
    redis: AsyncRedis, name: str
) -> None:
    pool = AsyncPool(redis, name)
    sessions = [row(7, True, "elite", auth=f"session-{n}:pw@") for n in (1, 2, 3)]
    await pool.merge("r1", merged(found(*sessions, row(1, True, "elite"))), TTL)
    entries = await pool.entries()
    assert len(entries) == 4  # three session users on one gateway: three entries
    assert merge.withheld(entries) == 3
    exported = merge.render(entries)
    assert "pw@" not in exported[merge.JSON_KEY]
    assert "session-2:***@1.1.1.1:7" in exported[merge.JSON_KEY]
    assert exported[merge.TXT_KEY] == "http://1.1.1.1:1\n"  # only what works as written
    # A changed password scores the same proxy, not a new entry; the pool
    # keeps the newest password whole.
    await pool.merge("r2", merged(found(row(7, True, "elite", auth="session-1:new@"))), TTL)
    entries = await pool.entries()
    assert len(entries) == 4
    session1 = next(e for e in entries if "session-1" in e.proxy)
    assert session1.proxy == "http://session-1:new@1.1.1.1:7"
    assert session1.score == pytest.approx(1.1)
    included = merge.render(entries, include_credentials=True)
    assert included[merge.TXT_KEY].count("pw@") == 2
    assert "session-1:new@" in included[merge.TXT_KEY]


async def test_the_export_is_the_best_that_fits(redis: AsyncRedis, name: str) -> None:
    pool = AsyncPool(redis, name)
    await fill(pool, [entry(port) for port in range(1, 201)])
    for _ in range(3):
        await pool.report("http://127.0.0.1:7", True)
    best = await pool.entries()
    chosen = merge.fit(best, 8192)
    rendered = merge.render(chosen)
    assert 0 < len(chosen) < 200
    assert sum(len(v) for v in rendered.values()) <= 8192
    assert chosen[0].port == 7  # the best first


def test_get_is_fair_and_prefers_higher_scores(
    sredis: Redis, name: str, redis_server: RedisServer
) -> None:
    import asyncio

    async def seed() -> None:
        client = AsyncRedis.from_url(redis_server.url, decode_responses=True)
        await fill(AsyncPool(client, name), [entry(p) for p in range(1, 21)])
        await client.aclose()

    asyncio.run(seed())
    pool = Pool(sredis, name)
    counts = Counter(pool.get().port for _ in range(2000))
    assert set(counts) == set(range(1, 21))
    assert max(counts.values()) <= 2 * 2000 / 20  # nobody gets more than twice its share
    for _ in range(8):  # 1.1^8 = 2.14: twice as good
        pool.report("http://127.0.0.1:5", True)
    counts = Counter(pool.get().port for _ in range(2000))
    assert counts[5] > 1.8 * max(n for p, n in counts.items() if p != 5)


def test_filters_pick_only_what_matches(
    sredis: Redis, name: str, redis_server: RedisServer
) -> None:
    import asyncio

    async def seed() -> None:
        client = AsyncRedis.from_url(redis_server.url, decode_responses=True)
        await fill(
            AsyncPool(client, name),
            [
                entry(1, "http", "transparent", 50),
                entry(2, "socks5", "elite", 300),
                entry(3, "socks5", "anonymous", 1500),
                entry(4, "https", "elite", 90),
            ],
        )
        await client.aclose()

    asyncio.run(seed())
    pool = Pool(sredis, name)
    assert {pool.get(protocol=Protocol.SOCKS5).port for _ in range(10)} == {2, 3}
    assert {pool.get(min_anonymity=Anonymity.ELITE).port for _ in range(10)} == {2, 4}
    assert {pool.get(max_latency_ms=300).port for _ in range(10)} == {1, 2, 4}
    assert {pool.get(protocol=Protocol.SOCKS5, max_latency_ms=1000).port for _ in range(5)} == {2}
    with pytest.raises(NoMatch, match="protocol socks4"):
        pool.get(protocol=Protocol.SOCKS4)
    with pytest.raises(NotInPool):
        pool.report("http://127.0.0.1:99", True)
    # As the README writes them: the values, not the enums.
    with pool.lease(min_anonymity="elite", max_latency_ms=2000) as leased:
        assert leased.port in (2, 4)
    assert {pool.get(protocol="socks5").port for _ in range(10)} == {2, 3}
    with pytest.raises(ValueError, match="min_anonymity must be one of transparent, anonymous, "):
        pool.get(min_anonymity="elit")


async def test_a_batch_of_picks_takes_turns_as_single_picks_would(
    redis: AsyncRedis, name: str
) -> None:
    """Issue 35: the rotator draws its picks in batches. One call of 40
    picks over 20 members gives each its two turns, in the order 40 single
    picks would; a batch of reports is applied in order, and a proxy the
    pool does not hold gets its NotInPool without stopping the others."""
    batch, single = AsyncPool(redis, name), AsyncPool(redis, name + "-single")
    members = [entry(p, latency=50 * (p % 4)) for p in range(1, 21)]
    await fill(batch, members)
    await fill(single, members)
    drawn = [e.port for e in await batch.get_many(40)]
    assert drawn == [(await single.get()).port for _ in range(40)]
    assert Counter(drawn) == dict.fromkeys(range(1, 21), 2)
    # With a latency limit the script reads entries to filter them, each
    # once a call however often it is picked: the same turns all the same.
    fast = [e.port for e in await batch.get_many(30, max_latency_ms=60)]
    assert fast == [(await single.get(max_latency_ms=60)).port for _ in range(30)]
    assert Counter(fast) == {p: 3 for p in range(1, 21) if p % 4 < 2}
    with pytest.raises(NoMatch, match="protocol socks5"):
        await batch.get_many(3, protocol="socks5")
    reports = await batch.report_many(
        [("http://127.0.0.1:1", False, None), ("http://127.0.0.1:99", True, 5.0)]
        + [("http://127.0.0.1:1", False, None)] * 2
    )
    assert isinstance(reports[1], NotInPool)
    assert [getattr(r, "outcome", None) for r in reports] == ["failed", None, "failed", "removed"]
    assert 1 not in {e.port for e in await batch.entries()}  # the third failure in a row


async def test_a_batch_of_reports_ends_the_pool_as_one_at_a_time_would(
    redis: AsyncRedis, name: str
) -> None:
    """The rotator sends a proxy's successes in a batch as one run
    (``report_runs``): the pool ends exactly as after each report alone,
    scores, failures in a row, last latency and removals alike, and each
    outcome gets its run's answer."""
    batched, alone = AsyncPool(redis, name), AsyncPool(redis, name + "-alone")
    members = [entry(p) for p in range(1, 5)]
    await fill(batched, members)
    await fill(alone, members)
    url = "http://127.0.0.1:{}".format
    outcomes: list[tuple[str, bool, float | None]] = [
        (url(1), True, 10.0),
        (url(2), True, 20.0),
        (url(1), True, None),
        (url(1), False, None),
        (url(2), True, 25.0),
        (url(1), True, 12.0),
        (url(3), False, None),
        (url(3), False, None),
        (url(3), False, None),
        (url(4), True, 40.0),
        (url(4), True, 41.0),
    ]
    reports = await batched.report_many(outcomes)
    for outcome in outcomes:
        await alone.report(*outcome)
    assert len(reports) == len(outcomes)
    assert [getattr(r, "outcome", None) for r in reports][-5:] == ["failed"] * 2 + ["removed"] + [
        "ok"
    ] * 2

    async def stored(pool: AsyncPool) -> dict[str, dict[str, object]]:
        """Each member as the pool stores it, but for the clock of its
        report and its group's key (which names the pool)."""
        raw = cast(dict[str, str], await redis.hgetall(pool.calls.keys.entries))
        times = ("last_checked", "last_ok", "group_key")
        return {
            i: {k: v for k, v in json.loads(e).items() if k not in times} for i, e in raw.items()
        }

    assert await stored(batched) == await stored(alone)
    assert "127.0.0.1:3" not in str(await stored(batched))  # three failures in a row
    fourth = next(e for e in (await stored(batched)).values() if e["port"] == 4)
    assert fourth["reported_latency_ms"] == 41.0


REPORTER = """
import sys
from redis import Redis
from proxyrefresh.api import Scoring
from proxyrefresh.pool import NotInPool, Pool
url, name, worker = sys.argv[1], sys.argv[2], int(sys.argv[3])
pool = Pool(Redis.from_url(url), name, scoring=Scoring(max_score=1e12))
for i in range(1000):
    port = 1 + (i + worker) % 50
    # 1-40 always work; 41-45 fail twice in all (worker 0's first visits); 46-50 always fail
    ok = port <= 40 or (port <= 45 and not (worker == 0 and i < 100))
    try:
        pool.report(f"http://127.0.0.1:{port}", ok)
    except NotInPool:
        pass
"""


def test_parallel_reports_equal_a_serial_run(redis_server: RedisServer, sredis: Redis) -> None:
    import asyncio

    names = {"parallel": f"par{uuid.uuid4().hex[:6]}", "serial": f"ser{uuid.uuid4().hex[:6]}"}

    async def seed() -> None:
        client = AsyncRedis.from_url(redis_server.url, decode_responses=True)
        for n in names.values():
            await fill(AsyncPool(client, n), [entry(p) for p in range(1, 51)])
        await client.aclose()

    asyncio.run(seed())
    env = {**os.environ}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", REPORTER, redis_server.url, names["parallel"], str(w)], env=env
        )
        for w in range(8)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0] * 8
    for w in range(8):
        subprocess.run(
            [sys.executable, "-c", REPORTER, redis_server.url, names["serial"], str(w)],
            check=True,
            timeout=120,
        )
    scoring = Scoring(max_score=1e12)
    parallel = {
        e.port: (e.score, e.failures)
        for e in Pool(sredis, names["parallel"], scoring=scoring).entries()
    }
    serial = {
        e.port: (e.score, e.failures)
        for e in Pool(sredis, names["serial"], scoring=scoring).entries()
    }
    assert parallel == serial
    assert set(parallel) == set(range(1, 46))  # the always-failing ones are gone
    assert parallel[1][0] == pytest.approx(1.1**160, rel=1e-9)
    assert parallel[1][1] == 0
    # A proxy dropped after its third failure is never handed out again.
    pool = Pool(sredis, names["parallel"])
    assert not {pool.get().port for _ in range(500)} & set(range(46, 51))


def test_cli_reads_and_feeds_the_pool(redis_server: RedisServer, name: str) -> None:
    import asyncio

    async def seed() -> None:
        client = AsyncRedis.from_url(redis_server.url, decode_responses=True)
        await fill(
            AsyncPool(client, name, namespace="team"), [entry(1), entry(2, "socks5", "anonymous")]
        )
        await client.aclose()

    asyncio.run(seed())
    env = {"PROXYREFRESH_REDIS_URL": redis_server.url}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli("pool", *args, env=env)

    stats = cli("stats", name, "-n", "team", "--json")
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout) | {"protocols": None, "anonymity": None} == {
        "size": 2,
        "usable": 2,
        "protocols": None,
        "anonymity": None,
    }
    assert sorted(cli("list", name, "-n", "team").stdout.split()) == [
        "http://127.0.0.1:1",
        "socks5://127.0.0.1:2",
    ]
    got = cli("get", name, "-n", "team", "--protocol", "socks5")
    assert (got.returncode, got.stdout.strip()) == (0, "socks5://127.0.0.1:2")
    none = cli("get", name, "-n", "team", "--protocol", "socks4")
    assert none.returncode == 4
    assert "no proxy in pool team/" in none.stderr
    # kubectl's -o: one JSON array with readable times, a table, YAML.
    listed = json.loads(cli("list", name, "-n", "team", "-o", "json").stdout)
    assert {e["proxy"] for e in listed} == {"http://127.0.0.1:1", "socks5://127.0.0.1:2"}
    assert all(e["last_ok"].endswith("Z") for e in listed)
    wide = cli("list", name, "-n", "team", "-o", "wide").stdout.splitlines()
    assert wide[0].split()[:3] == ["PROXY", "PROTOCOL", "ANONYMITY"]
    assert len(wide) == 3
    assert "usable: 2" in cli("stats", name, "-n", "team", "-o", "yaml").stdout
    # A bare host:port, as `check` takes it (http unless --protocol says).
    for _ in range(2):
        bare = cli("report", name, "127.0.0.1:2", "--protocol", "socks5", "-n", "team", "--ok")
        assert bare.returncode == 0, bare.stderr
    scored = json.loads(cli("get", name, "-n", "team", "--protocol", "socks5", "-o", "json").stdout)
    assert scored["score"] == 1.21  # rounded: not 1.2100000000000002
    report = cli("report", name, "http://127.0.0.1:1", "-n", "team", "--fail", "--json")
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["failures"] == 1
    assert json.loads(cli("stats", name, "-n", "team", "--json").stdout)["usable"] == 1
    # Bad input: each a clear message and its exit code, nothing written.
    missing = cli("report", name, "http://127.0.0.1:9", "-n", "team", "--ok")
    assert missing.returncode == 4
    assert "is not in pool" in missing.stderr
    unknown = cli("stats", "nosuchpool", "-n", "team")
    assert unknown.returncode == 4
    assert "pool team/nosuchpool not found" in unknown.stderr
    malformed = cli("report", name, "not-a-proxy", "-n", "team", "--ok")
    assert malformed.returncode == 2
    assert "is not a proxy URL" in malformed.stderr
    env["PROXYREFRESH_REDIS_URL"] = "redis://:hunter2@127.0.0.1:1/0"
    down = cli("stats", name, "-n", "team")
    assert down.returncode == 69
    assert "unavailable: cannot connect to 127.0.0.1:1: connection refused" in down.stderr
    assert "hunter2" not in down.stderr
    assert "Errno" not in down.stderr
