"""The worker pod and the Redis job protocol, against a real redis-server,
real proxies and the real ``proxyrefresh worker`` command."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import NoPermissionError

from proxyrefresh.constants import RUNS
from proxyrefresh.fanout import access
from proxyrefresh.fanout.runner import DONE, run_chunk
from proxyrefresh.fanout.slots import Slots
from proxyrefresh.fanout.store import ChunkResult, ItemOutcome, RunStore, StateLost
from proxyrefresh.models import Protocol, Proxy, ProxyResult
from proxyrefresh.settings import RedisSettings
from tests.conftest import Bed, async_wait_for
from tests.harness.testbed import RedisServer

pytestmark = pytest.mark.integration


async def read_snapshot(store: RunStore) -> dict[str, Any] | None:
    """The JSON snapshot the pods keep current (what a page would read)."""
    raw = await store.redis.get(store.keys.snapshot)
    return json.loads(raw) if raw else None


async def completed_indexes(store: RunStore) -> set[int]:
    return {int(i) for i in await store.redis.smembers(store.keys.completed)}


def items(bed: Bed, *names: str) -> list[dict[str, Any]]:
    """Chunk items (Proxy dicts) for the named testbed proxies."""
    out = []
    for name in names:
        url = bed.by_name(name).url
        scheme, rest = url.split("://")
        host, port = rest.rsplit(":", 1)
        out.append(Proxy(protocol=Protocol(scheme), host=host, port=int(port)).to_item())
    return out


@pytest.fixture
def run_id() -> str:
    return str(uuid.uuid4())


def worker_env(redis_url: str, run_id: str, index: int, judge: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXYREFRESH_")}
    env.update(
        PROXYREFRESH_REDIS_URL=redis_url,
        PROXYREFRESH_RUN_ID=run_id,
        JOB_COMPLETION_INDEX=str(index),
        PROXYREFRESH_JUDGES=json.dumps([judge]),
        PROXYREFRESH_TIMEOUT="3",
        PROXYREFRESH_PROGRESS_INTERVAL_SECONDS="0.2",
        # The judges live on loopback, which the guard refuses unless allowed.
        PROXYREFRESH_NETWORK_ALLOWED='["127.0.0.0/8"]',
    )
    env.update(extra)
    return env


def start_worker(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "proxyrefresh.front.cli", "worker"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def finish(proc: subprocess.Popen[str], within: float = 60) -> tuple[int, str]:
    _, err = await asyncio.to_thread(proc.communicate, timeout=within)
    return proc.returncode, err


LIVE = ("tinyproxy-anonymous", "tinyproxy-elite-127.0.0.13", "pproxy-socks5")
DEAD = ("refused", "forger")


async def test_worker_checks_its_chunk_and_counts_it(
    bed: Bed, redis_server: RedisServer, redis: Redis, run_id: str
) -> None:
    store = RUNS.store(redis, run_id)
    await store.write_chunks([items(bed, *LIVE), items(bed, *DEAD)])
    code, err = await finish(start_worker(worker_env(redis_server.url, run_id, 0, bed.judge)))
    assert code == 0, err
    progress = await store.progress()
    assert (progress.completed_chunks, progress.processed, progress.succeeded) == (1, 3, 3)
    (result,) = (await store.read_results()).values()
    assert result.index == 0
    assert result.partial is False
    assert sorted(r.value["anonymity"] for r in result.outcomes) == ["anonymous", "elite", "elite"]
    snapshot = await read_snapshot(store)
    assert snapshot is not None
    assert snapshot["completed_chunks"] == 1
    assert snapshot["index_completed"] is True


async def test_dead_results_are_stored_without_their_defaults(
    bed: Bed, redis_server: RedisServer, redis: Redis, run_id: str
) -> None:
    """Most of a run's results are dead proxies: each is stored with what it
    says (the error, when) and without the empty fields, and reads back whole."""
    store = RUNS.store(redis, run_id)
    await store.write_chunks([items(bed, *DEAD)])
    code, err = await finish(start_worker(worker_env(redis_server.url, run_id, 0, bed.judge)))
    assert code == 0, err
    (result,) = (await store.read_results()).values()
    assert len(result.outcomes) == len(DEAD)
    for outcome in result.outcomes:
        assert not {"revealing_headers", "targets", "latency_ms"} & outcome.value.keys()
        dead = ProxyResult.model_validate(outcome.value)
        assert dead.alive is False
        assert dead.error
        assert dead.targets == []


async def test_two_pods_racing_give_exact_totals(
    bed: Bed, redis_server: RedisServer, redis: Redis, run_id: str
) -> None:
    store = RUNS.store(redis, run_id)
    await store.write_chunks([items(bed, *LIVE, *DEAD), items(bed, *DEAD, *LIVE[:2])])
    procs = [start_worker(worker_env(redis_server.url, run_id, i, bed.judge)) for i in (0, 1)]
    results = await asyncio.gather(*(finish(p) for p in procs))
    assert [code for code, _ in results] == [0, 0], results
    progress = await store.progress()
    assert (progress.completed_chunks, progress.processed, progress.succeeded) == (2, 9, 5)
    assert await completed_indexes(store) == {0, 1}


async def test_a_retried_index_is_counted_once(
    bed: Bed, redis_server: RedisServer, redis: Redis, run_id: str
) -> None:
    store = RUNS.store(redis, run_id)
    await store.write_chunks([items(bed, *LIVE)])
    for _ in range(3):
        code, err = await finish(start_worker(worker_env(redis_server.url, run_id, 0, bed.judge)))
        assert code == 0, err
    progress = await store.progress()
    assert (progress.completed_chunks, progress.processed, progress.succeeded) == (1, 3, 3)
    assert len(await store.read_results()) == 1
    assert "already counted" in err
    # The same result written again directly is still one completion.
    (result,) = (await store.read_results()).values()
    assert await store.complete(result) is False
    assert (await store.progress()).completed_chunks == 1


async def start_slow_worker(
    bed: Bed, redis_url: str, store: RunStore, run_id: str, holes: int, timeout: str = "30"
) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """Dispatch the live proxies plus black holes, start a pod and wait until
    it has reported the live ones (the holes keep it busy for ``timeout``)."""
    await store.write_chunks([items(bed, *LIVE) + [p.to_item() for p in black_holes(bed, holes)]])
    env = worker_env(redis_url, run_id, 0, bed.judge, PROXYREFRESH_TIMEOUT=timeout)
    proc = start_worker(env)

    async def live_reported() -> bool:
        return (await store.progress()).succeeded == len(LIVE)

    await async_wait_for(live_reported, 30, "the pod to report its live proxies")
    return proc, env


async def test_killed_mid_chunk_and_rerun_gives_one_result(
    bed: Bed, redis_server: RedisServer, redis: Redis, run_id: str
) -> None:
    store = RUNS.store(redis, run_id)
    proc, env = await start_slow_worker(bed, redis_server.url, store, run_id, holes=4)
    proc.kill()
    proc.wait(timeout=10)
    assert (await store.progress()).completed_chunks == 0
    code, err = await finish(start_worker({**env, "PROXYREFRESH_TIMEOUT": "1"}))
    assert code == 0, err
    progress = await store.progress()
    assert (progress.completed_chunks, progress.processed, progress.succeeded) == (1, 7, 3)
    (result,) = (await store.read_results()).values()
    assert sorted(r.pos for r in result.outcomes) == list(range(7))


async def test_sigterm_saves_partial_and_the_retry_resumes(
    bed: Bed, redis_server: RedisServer, redis: Redis, run_id: str
) -> None:
    store = RUNS.store(redis, run_id)
    proc, env = await start_slow_worker(bed, redis_server.url, store, run_id, holes=2)
    proc.send_signal(signal.SIGTERM)
    code, err = await finish(proc)
    assert code == 143, err
    (saved,) = (await store.read_results()).values()
    assert saved.partial is True
    assert saved.processed == 3
    assert len(saved.pending) == 2
    assert await completed_indexes(store) == set()
    code, err = await finish(start_worker({**env, "PROXYREFRESH_TIMEOUT": "1"}))
    assert code == 0, err
    assert "3 items to do" not in err
    assert "5 items, 2 to do (attempt 2)" in err
    (done,) = (await store.read_results()).values()
    assert (done.partial, done.processed, done.succeeded, done.attempts) == (False, 5, 3, 2)


async def test_soft_deadline_saves_a_partial_result(
    bed: Bed, redis_server: RedisServer, redis: Redis, run_id: str
) -> None:
    holes = [p.to_item() for p in black_holes(bed, 3)]
    store = RUNS.store(redis, run_id)
    await store.write_chunks([items(bed, *LIVE) + holes])
    env = worker_env(
        redis_server.url,
        run_id,
        0,
        bed.judge,
        PROXYREFRESH_TIMEOUT="60",
        PROXYREFRESH_CHUNK_SECONDS="4",
    )
    code, err = await finish(start_worker(env))
    assert code == 0, err
    (result,) = (await store.read_results()).values()
    assert result.partial is True
    assert result.reason == "soft deadline"
    assert (result.processed, len(result.pending)) == (3, 3)
    assert "unchecked 3" in err
    assert await completed_indexes(store) == {0}


def black_holes(bed: Bed, count: int) -> list[Proxy]:
    return [
        Proxy.from_item(
            {
                "protocol": "http",
                "host": p.url.split("//")[1].split(":")[0],
                "port": int(p.url.rsplit(":", 1)[1]),
            }
        )
        for p in bed.testbed.blackholes("127.0.0.25", count)
    ]


async def test_a_worker_whose_redis_user_is_gone_exits_at_once(
    bed: Bed, redis_server: RedisServer, run_id: str
) -> None:
    """Its run was deleted and its user revoked: a refused login is final,
    so the pod exits 69 within seconds instead of riding out every retry."""
    url = redis_server.url.replace("redis://", f"redis://proxyrefresh-run-{run_id}:revoked@")
    started = time.monotonic()
    code, err = await finish(start_worker(worker_env(url, run_id, 0, bed.judge)), within=30)
    assert code == 69
    assert "invalid username-password pair" in err
    assert "revoked" not in err  # the password stays hidden
    assert time.monotonic() - started < 5


# Server-wide commands a leaked worker credential was once able to send.
REFUSED = [
    ("PUBSUB", "CHANNELS", "*"),
    ("DBSIZE",),
    ("MEMORY", "STATS"),
    ("SCRIPT", "FLUSH"),
    ("FUNCTION", "FLUSH"),
    ("KEYS", "*"),
    ("SCAN", "0"),
    ("CONFIG", "GET", "maxmemory"),
    ("FLUSHALL",),
    ("CLIENT", "LIST"),
    ("EVAL", "while true do end", "0"),
    ("SCRIPT", "LOAD", "return 1"),
]


async def test_a_run_user_works_its_run_and_nothing_else(
    bed: Bed, redis_server: RedisServer, redis: Redis, run_id: str
) -> None:
    """The per-run user (fanout.access) is all a worker gets: its chunk is
    checked and counted under it, with slots; every server-wide command
    and every key not the run's is refused; and after Redis forgot the
    scripts the worker waits for the operator to load them again."""
    store = RUNS.store(redis, run_id)
    await store.write_chunks([items(bed, *LIVE)])
    await redis.set("proxyrefresh:{other}:chunks", "theirs")
    await access.grant(redis, run_id, "k", RUNS)
    await redis.script_flush()  # as a restarted Redis would have it
    url = access.run_url(redis_server.url, run_id, "k", RUNS)
    worker = start_worker(worker_env(url, run_id, 0, bed.judge, PROXYREFRESH_SLOTS="1"))

    async def refused_load() -> bool:
        log: list[dict[str, str]] = await redis.acl_log()  # type: ignore[assignment]
        return any(e["object"] == "script|load" and run_id in e["username"] for e in log)

    await async_wait_for(refused_load, 30, "the worker to be refused loading a script")
    await access.grant(redis, run_id, "k", RUNS)  # the operator's next step loads them
    code, err = await finish(worker)
    assert code == 0, err
    progress = await store.progress()
    assert (progress.completed_chunks, progress.succeeded) == (1, 3)

    leaked = Redis.from_url(url, decode_responses=True)
    try:
        for command in REFUSED:
            with pytest.raises(NoPermissionError):
                await leaked.execute_command(  # type: ignore[no-untyped-call]
                    *command
                )
        key = RUNS.keys(run_id).results
        with pytest.raises(NoPermissionError):  # 100 MB at an offset of its own key
            await leaked.execute_command(  # type: ignore[no-untyped-call]
                "SETRANGE", key, str(100 << 20), "x"
            )
        for other in ("proxyrefresh:{other}:chunks", RUNS.keys(run_id).key("mine")):
            with pytest.raises(NoPermissionError):
                await leaked.execute_command(  # type: ignore[no-untyped-call]
                    "EVALSHA", "0" * 40, "1", other
                )
            with pytest.raises(NoPermissionError):
                await leaked.hget(other, "0")
        assert await leaked.hget(RUNS.keys(run_id).chunks, "0")  # its own chunk still reads
    finally:
        await leaked.aclose()
    assert await redis.get("proxyrefresh:{other}:chunks") == "theirs"
    await access.revoke(redis, run_id, RUNS)


async def test_exit_codes_for_what_a_retry_cannot_fix(
    bed: Bed, redis_server: RedisServer, run_id: str
) -> None:
    env = worker_env(redis_server.url, run_id, 0, bed.judge)
    no_id = {k: v for k, v in env.items() if k != "PROXYREFRESH_RUN_ID"}
    code, err = await finish(start_worker(no_id))
    assert code == 64
    assert "bad configuration: PROXYREFRESH_RUN_ID: Field required" in err
    code, err = await finish(start_worker({**env, "PROXYREFRESH_ENGINE": "carrier-pigeon"}))
    assert code == 64
    assert "engine 'carrier-pigeon'" in err
    code, err = await finish(start_worker(env))  # nothing dispatched under this id
    assert code == 65
    assert f"chunk 0 of run {run_id} is not in Redis" in err


async def test_redis_unavailable_exits_69_naming_it_without_its_password(
    bed: Bed, run_id: str
) -> None:
    url = "redis://proxyrefresh-run-x:hunter2-secret@127.0.0.1:1/0"
    env = worker_env(url, run_id, 0, bed.judge, PROXYREFRESH_REDIS_RETRIES="2")
    code, err = await finish(start_worker(env))
    assert code == 69
    assert "Redis at redis://proxyrefresh-run-x:***@127.0.0.1:1/0 unavailable" in err
    assert "hunter2" not in err


async def test_a_judge_the_guard_refuses_fails_the_job_at_once(
    bed: Bed, redis_server: RedisServer, run_id: str
) -> None:
    # The guard on, nothing allowed: the loopback judge is refused before use.
    env = worker_env(redis_server.url, run_id, 0, bed.judge, PROXYREFRESH_NETWORK_ALLOWED="[]")
    code, err = await finish(start_worker(env))
    assert code == 64
    host = bed.judge.split("//")[1].split(":")[0]
    assert f"bad configuration: {host} is a loopback address" in err


async def test_keys_expire_and_delete_removes_everything(redis: Redis, run_id: str) -> None:
    async def noop(batch: list[Any]) -> AsyncIterator[tuple[int, dict[str, Any], bool]]:
        for pos, item in enumerate(batch):
            yield pos, {"item": item}, True

    store = RUNS.store(redis, run_id, ttl=300)
    await store.write_chunks([[1, 2], [3]])
    await run_chunk(store, 0, noop)
    assert await Slots(redis, store.keys, 2).take("left-by-a-pod")
    pattern = f"proxyrefresh:{{{run_id}}}:*"
    keys = [k async for k in redis.scan_iter(pattern)]
    assert len(keys) >= 10
    ttls = [await redis.ttl(k) for k in keys]
    assert all(0 < t <= 300 for t in ttls), dict(zip(keys, ttls, strict=True))
    assert await store.delete() == len(keys)
    assert [k async for k in redis.scan_iter(pattern)] == []
    # A pod stopped after the deletion must not bring the run back.
    with pytest.raises(StateLost):
        await store.save_partial(
            ChunkResult(index=1, outcomes=[ItemOutcome(pos=0, ok=False, value={})], partial=True)
        )
    assert [k async for k in redis.scan_iter(pattern)] == []

    short = RUNS.store(redis, run_id, ttl=1)
    await short.write_chunks([[1]])
    await run_chunk(short, 0, noop)

    async def gone() -> bool:
        return not [k async for k in redis.scan_iter(pattern)]

    await async_wait_for(gone, 10, "every key of the run to expire")
    with pytest.raises(StateLost):
        await short.progress()


class CountingRedis(Redis):
    """Counts round trips: one per command sent, one per pipeline."""

    round_trips = 0

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        CountingRedis.round_trips += 1
        return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        CountingRedis.round_trips += 1
        return super().pipeline(transaction, shard_hint)


@pytest.mark.parametrize("size", [100, 1000])
async def test_round_trips_do_not_grow_with_chunk_size(
    redis_server: RedisServer, run_id: str, size: int, capsys: pytest.CaptureFixture[str]
) -> None:
    async def instant(batch: list[Any]) -> AsyncIterator[tuple[int, dict[str, Any], bool]]:
        for pos, item in enumerate(batch):
            yield pos, {"item": item}, pos % 10 == 0

    client = CountingRedis.from_url(redis_server.url, decode_responses=True)
    store = RUNS.store(client, run_id)
    await store.write_chunks([list(range(size))])
    CountingRedis.round_trips = 0
    outcome = await run_chunk(store, 0, instant, progress_interval=60)
    await client.aclose()
    assert outcome.how == DONE
    assert outcome.result.processed == size
    with capsys.disabled():
        print(f"\n  chunk size {size}: {CountingRedis.round_trips} Redis round trips")
    # read chunk + previous result (1 pipeline), complete (script: EVALSHA, +1 on a cold
    # script cache), independent of the number of items.
    assert CountingRedis.round_trips <= 3


async def test_big_chunk_writes_go_in_bounded_commands(
    redis_server: RedisServer, run_id: str
) -> None:
    """Chunks of 3 MiB in all go in several HSETs, none much over 1 MiB
    (one command holds its whole payload in the operator's memory), and
    each chunk reads back as it was written."""
    sent: list[int] = []

    class Sizing(Redis):
        def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
            pipe = super().pipeline(transaction, shard_hint)
            hset = pipe.hset

            def measured(name: str, mapping: dict[Any, bytes]) -> Any:
                sent.append(sum(len(v) for v in mapping.values()))
                return hset(name, mapping=mapping)

            setattr(pipe, "hset", measured)  # noqa: B010 (mypy refuses assigning a method)
            return pipe

    client = Sizing.from_url(redis_server.url, decode_responses=True)
    store = RUNS.store(client, run_id)
    chunks = [[f"{n:06d}-" + "x" * 90 for n in range(i * 4000, (i + 1) * 4000)] for i in range(8)]
    assert await store.write_chunks(chunks) == 8
    assert sum(sent) > 3 << 20
    assert len(sent) >= 3
    assert max(sent) < (1 << 20) + 500_000  # the budget plus the chunk that crossed it
    for index, chunk in enumerate(chunks):
        items, _ = await store.read_chunk(index)
        assert items == chunk
    await client.aclose()


def test_chunk_result_roundtrips() -> None:
    result = ChunkResult(
        index=2,
        outcomes=[ItemOutcome(pos=0, ok=False, value={})],
        pending=["x"],
        processed=1,
        partial=True,
    )
    assert ChunkResult.model_validate_json(result.model_dump_json()) == result


async def test_a_brief_redis_outage_is_ridden_out(bed: Bed, run_id: str) -> None:
    server = RedisServer(bed.testbed, appendonly=True)
    redis = RedisSettings(url=server.url).client()  # retries, as the operator's does
    try:
        store = RUNS.store(redis, run_id)
        proc, _ = await start_slow_worker(bed, server.url, store, run_id, holes=2, timeout="4")
        await asyncio.to_thread(server.restart)  # data kept: appendonly
        code, err = await finish(proc)
        assert code == 0, err
        progress = await store.progress()
        assert (progress.completed_chunks, progress.processed, progress.succeeded) == (1, 5, 3)
    finally:
        await redis.aclose()
        server.stop()


async def test_results_stream_in_batches_as_they_are_stored(redis: Redis, run_id: str) -> None:
    """The merge reads results a few chunks at a time; what it reads is what
    is stored, in index order, partial results included."""
    store = RUNS.store(redis, run_id)
    await store.write_chunks([[i] for i in range(130)])
    for index in range(130):
        result = ChunkResult(
            index=index, outcomes=[ItemOutcome(pos=0, ok=True, value={"n": index})]
        )
        await (store.save_partial(result) if index % 7 == 0 else store.complete(result))
    streamed = [(i, r) async for i, r in store.iter_results(batch=16)]
    assert [i for i, _ in streamed] == list(range(130))
    assert {i: r.whole() for i, r in streamed} == await store.read_results()
    assert [[o.value["n"] for o in r.outcomes()] for _, r in streamed] == [[i] for i in range(130)]
