"""The control plane's pure functions, without a cluster."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import pytest

from proxyrefresh.api import Filter, ProxyRefreshSpec, Target
from proxyrefresh.fanout.job import JobEnd, failed_indexes, job_end
from proxyrefresh.fanout.results import StoredResult
from proxyrefresh.fanout.store import ChunkResult, ItemOutcome, Progress, chunked
from proxyrefresh.models import Anonymity, Tally, TargetSpec
from proxyrefresh.operator import dispatch, driver, merge, policy
from proxyrefresh.operator.settings import OperatorSettings
from proxyrefresh.operator.status import (
    changes,
    progress_fields,
    set_condition,
)
from proxyrefresh.pool import PoolEntry
from proxyrefresh.settings import NetworkSettings, RedisSettings

SPEC = ProxyRefreshSpec.model_validate(
    {
        "pool": "eu",
        "sources": [{"inline": ["1.2.3.4:80"]}],
        "chunkSize": 50,
        "parallelism": 3,
        "checker": {"judges": ["http://judge/"], "timeoutSeconds": 4},
        "retry": {"backoffLimitPerIndex": 1, "maxFailedIndexes": 2},
        "deadlines": {"chunkSeconds": 120},
    }
)


def build(
    name: str = "nightly",
    uid: str = "0123456789abcdef",
    spec: ProxyRefreshSpec = SPEC,
    chunks: int = 10,
    **settings: Any,
) -> dict[str, Any]:
    return dispatch.build_job(
        name=name,
        namespace="ns",
        uid=uid,
        spec=spec,
        chunks=chunks,
        settings=OperatorSettings(**settings),
        redis=RedisSettings(url="redis://:hunter2@r:6379/2"),
        network=NetworkSettings(allowed=["127.0.0.0/8"]),
    )


def env_of(job: dict[str, Any]) -> dict[str, Any]:
    container = job["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_job_fans_out_one_pod_per_chunk() -> None:
    job = build()
    spec = job["spec"]
    assert job["metadata"]["name"] == "nightly-01234567"
    assert spec["completionMode"] == "Indexed"
    # 3 chunks at work at once, 3 more pods ready to take the next ones.
    assert (spec["completions"], spec["parallelism"]) == (10, 6)
    assert env_of(job)["PROXYREFRESH_SLOTS"] == "3"
    assert (spec["backoffLimitPerIndex"], spec["maxFailedIndexes"]) == (1, 2)
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    # Room for one wait for a slot, then the chunk's own deadline.
    assert pod["activeDeadlineSeconds"] == 2 * 120
    assert pod["automountServiceAccountToken"] is False
    rule = spec["podFailurePolicy"]["rules"][0]
    assert rule["action"] == "FailJob"
    assert rule["onExitCodes"]["values"] == [64, 65]
    assert spec["template"]["metadata"]["labels"]["proxyrefresh.dev/pool"] == "eu"


def test_pods_run_ahead_only_while_chunks_wait() -> None:
    none = build(spec=SPEC.model_copy(update={"ready_pods": 0}))
    assert none["spec"]["parallelism"] == 3
    assert "PROXYREFRESH_SLOTS" not in env_of(none)
    assert none["spec"]["template"]["spec"]["activeDeadlineSeconds"] == 120
    one_wave = build(chunks=3)  # every chunk runs at once: nothing to wait for
    assert one_wave["spec"]["parallelism"] == 3
    assert "PROXYREFRESH_SLOTS" not in env_of(one_wave)
    few = build(chunks=5)  # never more pods than chunks
    assert few["spec"]["parallelism"] == 5
    assert env_of(few)["PROXYREFRESH_SLOTS"] == "3"


def test_workers_use_the_nodes_network_only_when_the_installer_says_so() -> None:
    pod = build()["spec"]["template"]["spec"]
    assert "hostNetwork" not in pod
    host = build(worker_host_network=True)["spec"]["template"]["spec"]
    assert host["hostNetwork"] is True
    # Cluster DNS still answers for Service names from the node's network.
    assert host["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert host["securityContext"]["runAsNonRoot"] is True


def test_the_driver_looks_for_the_jobs_end_often_once_every_chunk_is_done() -> None:
    def status(phase: str, done: int, failed: int = 0) -> dict[str, Any]:
        return {"phase": phase, "totalChunks": 4, "completedChunks": done, "failedChunks": failed}

    assert driver.awaiting_job_end(status("Processing", 4))
    assert driver.awaiting_job_end(status("Processing", 3, failed=1))  # given up counts
    assert driver.awaiting_job_end(status("Dispatched", 4))
    assert not driver.awaiting_job_end(status("Processing", 3))
    assert not driver.awaiting_job_end(status("Merging", 4))  # it has seen it
    assert not driver.awaiting_job_end({"phase": "Dispatched"})  # no chunks written yet
    assert driver.JOB_END_POLL < driver.HEARTBEAT


def test_worker_env_carries_the_checker_settings() -> None:
    env = env_of(build())
    assert env["PROXYREFRESH_RUN_ID"] == "0123456789abcdef"
    assert json.loads(env["PROXYREFRESH_JUDGES"]) == ["http://judge/"]
    assert env["PROXYREFRESH_TIMEOUT"] == "4.0"
    assert env["PROXYREFRESH_CHUNK_SECONDS"] == "120"
    # The workers get the installer's network rule, not a looser one.
    assert env["PROXYREFRESH_NETWORK_GUARD"] == "true"
    assert json.loads(env["PROXYREFRESH_NETWORK_ALLOWED"]) == ["127.0.0.0/8"]
    # The Redis URL only by reference to the run's own Secret, in any namespace.
    assert env["PROXYREFRESH_REDIS_URL"] == {
        "secretKeyRef": {"name": "nightly-01234567-redis", "key": "url"}
    }
    assert "hunter2" not in json.dumps(build())


def test_what_the_operator_writes_into_a_pod_the_pod_reads_back() -> None:
    """The pod's environment is written by the settings classes that read
    it: every variable is read, and reads back as the spec said."""
    from proxyrefresh.settings import CheckerSettings, WorkerSettings

    spec = SPEC.model_copy(deep=True)
    spec.checker.targets = [Target(url="http://127.0.0.1:9/t", expect_status=204)]
    spec.checker.connect_timeout_seconds = 1.5
    env = {k: v for k, v in env_of(build(spec=spec)).items() if isinstance(v, str)}
    env["JOB_COMPLETION_INDEX"] = "3"  # the Job controller's
    checker = CheckerSettings.from_env(env)
    assert (checker.judges, checker.timeout, checker.connect_timeout) == (
        ["http://judge/"],
        4.0,
        1.5,
    )
    assert checker.targets == [TargetSpec(url="http://127.0.0.1:9/t", expect_status=204)]
    worker = WorkerSettings.from_env(env)
    assert (worker.run_id, worker.job_completion_index, worker.chunk_seconds) == (
        "0123456789abcdef",
        3,
        120,
    )
    assert RedisSettings.from_env(env).key_ttl_seconds == RedisSettings().key_ttl_seconds
    assert NetworkSettings.from_env(env).allowed == ["127.0.0.0/8"]
    # No variable the pod does not read (an engine only one image ever had).
    assert "PROXYREFRESH_ENGINE" not in env
    with pytest.raises(KeyError):
        CheckerSettings.env_of(no_such_field=1)


def test_the_redis_secret_is_owned_by_the_refresh() -> None:
    owner = {"kind": "ProxyRefresh", "name": "nightly", "uid": "u"}
    secret = dispatch.redis_secret("nightly-0123", "ns", "redis://x", owner, "eu", "nightly")
    assert secret["metadata"]["name"] == "nightly-0123-redis"
    assert secret["metadata"]["ownerReferences"] == [owner]
    assert secret["stringData"] == {"url": "redis://x"}


def test_max_failed_indexes_is_clamped_to_the_chunks() -> None:
    spec = SPEC.model_copy(
        update={"retry": SPEC.retry.model_copy(update={"max_failed_indexes": 50})}
    )
    assert build(spec=spec, chunks=3)["spec"]["maxFailedIndexes"] == 3


def test_parallelism_never_exceeds_chunks_and_names_fit_labels() -> None:
    job = build(name="x" * 253, uid="u" * 36, chunks=2)
    assert job["spec"]["parallelism"] == 2
    assert len(job["metadata"]["name"]) <= 49  # the job-name label (63) with room for pods
    assert list(chunked(list(range(5)), 2)) == [[0, 1], [2, 3], [4]]


def test_progress_never_goes_backwards() -> None:
    old = {"phase": "Processing", "completedChunks": 5, "checked": 250, "live": 9}
    fields = progress_fields(
        old, Progress(total_chunks=10, completed_chunks=4, processed=240, succeeded=9), None
    )
    assert (fields["completedChunks"], fields["checked"], fields["progress"]) == (
        5,
        250,
        "5/10 (50%)",
    )


def test_dispatched_becomes_processing_once_work_starts() -> None:
    progress = Progress(total_chunks=3, completed_chunks=0, processed=0, succeeded=0)
    assert "phase" not in progress_fields({"phase": "Dispatched"}, progress, None)
    job = {"status": {"active": 2}}
    assert progress_fields({"phase": "Dispatched"}, progress, job)["phase"] == "Processing"


def test_job_status_reading() -> None:
    assert failed_indexes({"status": {"failedIndexes": "1,3-5,9"}}) == 5
    assert job_end(
        {
            "status": {
                "conditions": [
                    {"type": "FailureTarget", "status": "True"},
                    {
                        "type": "Failed",
                        "status": "True",
                        "reason": "PodFailurePolicy",
                        "message": "m",
                    },
                ]
            }
        },
    ) == JobEnd(True, False, "PodFailurePolicy", "m")
    assert job_end({"status": {}}) == JobEnd(False)


def test_conditions_keep_their_transition_time() -> None:
    first = set_condition(None, "Degraded", False, "Fine", "ok")
    first[0]["lastTransitionTime"] = "2020-01-01T00:00:00Z"
    same = set_condition(first, "Degraded", False, "Fine", "still ok")
    assert same[0]["lastTransitionTime"] == "2020-01-01T00:00:00Z"
    flipped = set_condition(first, "Degraded", True, "TooFew", "2 usable")
    assert flipped[0]["lastTransitionTime"] != "2020-01-01T00:00:00Z"
    assert changes({"a": 1, "b": 2}, {"a": 1, "b": 3}) == {"b": 3}


def row(
    port: int,
    alive: bool,
    anonymity: str | None = None,
    latency: float = 100,
    auth: str = "",
) -> dict:  # type: ignore[type-arg]
    base = {
        "proxy": f"http://{auth}1.1.1.1:{port}",
        "protocol": "http",
        "host": "1.1.1.1",
        "port": port,
        "alive": alive,
        "checked_at": 1.0,
    }
    if alive:
        base.update(anonymity=anonymity, latency_ms=latency, exit_ip="1.1.1.1")
    return base


@dataclass
class Found:
    """A chunk counted as the merge counts it, and what it merges."""

    tally: Tally
    merged: list[tuple[str, bool, PoolEntry | None]]

    @property
    def passing(self) -> set[str]:
        return {url for url, passing, _ in self.merged if passing}


def found(*rows: dict, flt: Filter | None = None) -> Found:  # type: ignore[type-arg]
    chunk = ChunkResult(
        index=0,
        outcomes=[ItemOutcome(pos=i, ok=r["alive"], value=r) for i, r in enumerate(rows)],
        pending=["x"],
    )
    out = Tally()
    stored = StoredResult(chunk.model_dump_json())
    return Found(out, list(merge.tally_chunk(out, stored, flt or Filter())))


def merged(result: Found) -> list[tuple[str, bool, PoolEntry | None]]:
    return result.merged


def test_tally_applies_the_filter() -> None:
    t = found(
        row(1, True, "elite"),
        row(2, True, "transparent"),
        row(3, False),
        row(4, True, "anonymous", latency=9000),
        flt=Filter(max_latency_ms=8000),
    )
    assert (t.tally.checked, t.tally.live, t.tally.passed, t.tally.unchecked) == (4, 3, 1, 1)
    assert t.tally.anonymity == {"elite": 1, "transparent": 1, "anonymous": 1}
    assert t.passing == {"http://1.1.1.1:1"}


def item(
    name: str, created: str, phase: str | None, pool: str = "p", completed: str = ""
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "uid": name, "creationTimestamp": created},
        "spec": {"pool": pool},
        "status": {"phase": phase, "completedAt": completed},
    }


def test_forbid_waits_for_older_unfinished_refreshes_of_the_same_pool() -> None:
    items = [
        item("a", "1", "Processing"),
        item("b", "2", None),
        item("c", "3", None),
        item("d", "0", "Processing", pool="other"),
        item("e", "0", "Complete"),
    ]
    me = items[2]
    assert [i["metadata"]["name"] for i in policy.unfinished_before(items, me)] == ["a", "b"]
    assert policy.unfinished_before(items, items[0]) == []


def test_the_index_keeps_what_forbid_needs_by_namespace_and_pool() -> None:
    """Waiting refreshes decide from kopf's index (handlers.refreshes_by_pool),
    not a list: what it keeps must decide as the full objects do."""
    items = [
        {**item("a", "1", "Processing"), "extra": "x" * 1000},
        item("b", "2", None),
        {**item("c", "3", None), "metadata": {**item("c", "3", None)["metadata"],
                                              "deletionTimestamp": "4"}},
        item("d", "4", None),
        item("e", "0", "Processing", pool="other"),
    ]  # fmt: skip
    for it in items:
        it["metadata"]["namespace"] = "t-1"
    index: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for it in items:
        ((key, kept),) = policy.index_entry(it).items()
        index.setdefault(key, []).append(kept)
        assert "extra" not in kept
    assert set(index) == {("t-1", "p"), ("t-1", "other")}
    me = items[3]
    from_index = policy.unfinished_before(index[("t-1", "p")], me)
    assert [i["metadata"]["name"] for i in from_index] == ["a", "b"]
    assert from_index == [policy.index_entry(i)[("t-1", "p")] for i in items[:2]]


def test_history_keeps_the_newest() -> None:
    items = [item(f"ok{i}", str(i), "Complete", completed=f"2026-01-0{i}") for i in range(1, 8)]
    items += [item(f"bad{i}", str(i), "Failed", completed=f"2026-01-0{i}") for i in range(1, 6)]
    doomed = policy.history_to_delete(items, "p", keep_complete=5, keep_failed=3)
    assert sorted(doomed) == ["bad1", "bad2", "ok1", "ok2"]
    assert Anonymity.ELITE.at_least(Anonymity.ANONYMOUS)


def test_the_export_orders_by_latency_and_a_zero_latency_comes_first() -> None:
    from proxyrefresh.pool import PoolEntry

    def entry(port: int, latency: float | None) -> PoolEntry:
        return PoolEntry(
            proxy=f"http://127.0.0.1:{port}", protocol="http", host="127.0.0.1", port=port,
            anonymity=Anonymity.ELITE, latency_ms=latency, last_checked=0, last_ok=0,
        )  # fmt: skip

    got = merge.ordered([entry(1, None), entry(2, 5.0), entry(3, 0.0), entry(4, 0.4)])
    assert [e.latency_ms for e in got] == [0.0, 0.4, 5.0, None]


async def test_a_refresh_whose_scrape_killed_the_operator_too_often_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each scrape is written as begun by this process; a different process
    there means that one died scraping. At the limit the refresh fails
    (ScrapeCrashed) instead of killing the next operator too."""
    from proxyrefresh.operator import context, kube, memory, phase_scraping, transition
    from proxyrefresh.operator.scrape_slots import ScrapeSlots
    from proxyrefresh.operator.subscriptions import Subscriptions
    from proxyrefresh.operator.turns import PoolTurns

    written: list[dict[str, Any]] = []

    async def patch_status(namespace: str, name: str, fields: dict[str, Any]) -> None:
        written.append(fields)

    monkeypatch.setattr(kube, "patch_status", patch_status)
    redis: Any = None
    ctx = context.Context(
        OperatorSettings(scrape_crash_limit=3), RedisSettings(), redis, NetworkSettings(),
        subscriptions=Subscriptions(redis), memory=memory.RedisMemory(redis, 0.8),
        scrape_slots=ScrapeSlots(1, 1), pool_turns=PoolTurns(),
    )  # fmt: skip

    async def guard_scrape(status: dict[str, Any]) -> None:
        """The guard's wake: its fields, written in the one commit."""
        meta = {"name": "r", "namespace": "t", "uid": "u", "generation": 1}
        t = transition.Transition(
            transition.Refresh({"metadata": meta, "spec": {}, "status": status})
        )
        phase_scraping.guard_scrape(ctx, t)
        await transition.commit(ctx, t)

    await guard_scrape({"phase": "Scraping"})  # the first scrape
    assert written[-1] == {"scrapeBy": ctx.process, "scrapeCrashes": 0, "observedGeneration": 1}
    # This process tried before (a retried error): not a crash, nothing to write.
    await guard_scrape({"scrapeBy": ctx.process, "scrapeCrashes": 1})
    assert len(written) == 1
    # Another, gone, process began the last one: one more crash.
    await guard_scrape({"scrapeBy": "gone/1", "scrapeCrashes": 1})
    assert written[-1]["scrapeCrashes"] == 2
    with pytest.raises(context.Refused, match="stopped 3 times while scraping") as refused:
        await guard_scrape({"scrapeBy": "gone/2", "scrapeCrashes": 2})
    assert refused.value.reason == "ScrapeCrashed"
    assert "PROXYREFRESH_OPERATOR_SCRAPE_CRASH_LIMIT" in str(refused.value)


async def test_scrape_slots_leave_room_for_other_namespaces() -> None:
    """One namespace's refreshes take one slot at a time; the operator runs
    at most ``total``; a waiting scrape starts as soon as one ends."""
    import asyncio

    from proxyrefresh.operator.scrape_slots import ScrapeSlots

    slots = ScrapeSlots(total=2, per_namespace=1)
    release = asyncio.Event()
    running: list[str] = []

    async def scrape(namespace: str, name: str) -> None:
        async with slots.hold(namespace):
            running.append(name)
            await release.wait()

    tasks = [asyncio.create_task(scrape(ns, n)) for ns, n in
             [("a", "a1"), ("a", "a2"), ("b", "b1"), ("c", "c1")]]  # fmt: skip
    await asyncio.sleep(0.01)
    assert running == ["a1", "b1"]  # a2 waits for its namespace, c1 for the total
    assert "at most 1 at once" in slots.busy("a")
    assert "the operator's most at once" in slots.busy("c")
    release.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert sorted(running) == ["a1", "a2", "b1", "c1"]
    assert slots.busy("a") == ""


async def test_a_scrape_beside_its_loop_waits_for_its_slot_and_its_guard() -> None:
    """operator/scrape_tasks.py: a scrape takes its slot (or waits for one),
    begins only once its loop has written the guard, wakes the loop at each
    change, gives its slot back when done, and a cancelled one does too."""
    import asyncio

    from proxyrefresh.operator.scrape import Attempts, ScrapeResult
    from proxyrefresh.operator.scrape_slots import ScrapeSlots
    from proxyrefresh.operator.scrape_tasks import ScrapeTasks

    slots, tasks = ScrapeSlots(total=1, per_namespace=1), ScrapeTasks()
    woken: list[str] = []
    began: list[str] = []
    finish = asyncio.Event()

    def scraping(uid: str) -> Any:
        async def scrape(attempts: Attempts) -> ScrapeResult:
            began.append(uid)
            attempts.started("url http://127.0.0.1:9/list.txt", 2, 4)
            await finish.wait()
            return ScrapeResult()

        return scrape

    first = await tasks.start("u1", slots.hold("t"), scraping("u1"), lambda: woken.append("u1"))
    second = await tasks.start("u2", slots.hold("t"), scraping("u2"), lambda: woken.append("u2"))
    assert first.slot_taken.is_set()
    assert not second.slot_taken.is_set()
    assert woken == ["u1"]  # the slot was taken: its loop writes the guard next
    await asyncio.sleep(0.01)
    assert began == []  # nothing is fetched before the guard is written
    first.guarded.set()
    await asyncio.sleep(0.01)
    assert began == ["u1"]
    assert "fetching url http://127.0.0.1:9/list.txt: attempt 2 of 4" in first.attempts.text()
    finish.set()
    assert first.task is not None
    assert isinstance(await asyncio.wait_for(first.task, 5), ScrapeResult)
    assert tasks.finish("u1") is first
    await asyncio.sleep(0.01)
    assert second.slot_taken.is_set()  # the slot came free: the next one has it
    assert woken == ["u1", "u1", "u2"]  # done, then the next one's slot
    await tasks.cancel("u2")  # its refresh went before its guard was written
    assert tasks.get("u2") is None
    assert slots.busy("t") == ""
    assert began == ["u1"]


def test_a_namespace_holds_the_candidates_of_its_unfinished_refreshes() -> None:
    items = [
        {**item("a", "1", "Processing"), "status": {"phase": "Processing", "candidates": 700}},
        {**item("b", "2", "Complete"), "status": {"phase": "Complete", "candidates": 900}},
        {**item("c", "3", "Dispatched", pool="q"), "status": {"phase": "Dispatched",
                                                              "candidates": 50}},
        item("me", "4", "Scraping"),
    ]  # fmt: skip
    for it in items:
        it["metadata"]["namespace"] = "t"
    kept = [next(iter(policy.index_entry(it).values())) for it in items]
    assert policy.candidates_held(kept, items[3]) == 750  # finished ones hold nothing


async def test_a_refresh_waiting_for_its_pool_steps_when_a_refresh_of_it_ends() -> None:
    import asyncio

    from proxyrefresh.operator import driver
    from proxyrefresh.operator.turns import PoolTurns

    turns = PoolTurns()
    turn = turns.event("t", "p")  # taken before the waiting refresh's step
    waiting = asyncio.create_task(driver.wait_for_turn(turn, False, time.monotonic() + 30))
    turns.wake("t", "other")  # another pool's end changes nothing
    await asyncio.sleep(0.05)
    assert not waiting.done()
    started = time.monotonic()
    turns.wake("t", "p")
    await asyncio.wait_for(waiting, 2)
    assert time.monotonic() - started < 0.5
    assert not turns.event("t", "p").is_set()  # the next waiters get a fresh one
    assert driver.waiting_for_pool(
        {"phase": "Pending", "conditions": [{"type": "Waiting", "status": "True",
                                             "reason": "PoolBusy"}]}
    )  # fmt: skip


def test_sentinels_with_a_password_refuse_a_refresh_at_once_and_say_why() -> None:
    """The workers are not handed the sentinels' password (a tenant could
    reconfigure the sentinels with it), so they could never find the
    primary: the refresh is refused before anything runs, saying so."""
    from proxyrefresh.operator.context import Refused
    from proxyrefresh.operator.phase_scraping import workers_can_reach_redis

    sentinels = "redis+sentinel://127.0.0.1:26379/svc/0"
    with pytest.raises(Refused) as refused:
        workers_can_reach_redis(RedisSettings(url=sentinels, sentinel_password="s3cret"))
    assert refused.value.reason == "RedisSentinelPassword"
    assert "s3cret" not in str(refused.value)
    workers_can_reach_redis(RedisSettings(url=sentinels))  # the workers ask as the operator does
    workers_can_reach_redis(RedisSettings(url="redis://127.0.0.1:6379/0"))
