"""ProxyRefresh from ``kubectl apply`` to a merged pool, on the local control
plane, with real Redis, real proxies, real worker pods and the real operator."""

from __future__ import annotations

import itertools
import json
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from kubernetes import client, config, watch
from redis import Redis as SyncRedis

from proxyrefresh import constants as c
from proxyrefresh.api import ProxyRefreshStatus
from proxyrefresh.constants import RUNS
from tests.conftest import wait_for
from tests.e2e.conftest import World, phase_in, refresh, wait_status
from tests.harness.kubectl import Kubectl
from tests.harness.scenario import OperatorProcess, build_candidates
from tests.harness.testbed import start_logged

pytestmark = pytest.mark.e2e


def complete(status: dict[str, Any]) -> bool:
    return any(
        x["type"] == "Complete" and x["status"] == "True" for x in status.get("conditions", [])
    )


def done(status: dict[str, Any]) -> bool:
    return status.get("phase") in ("Complete", "Failed")


class Watcher(threading.Thread):
    """Records every watch event of one refresh (and when it arrived), and
    what the output ConfigMap held at the first event that said Complete."""

    def __init__(self, kubeconfig: str, namespace: str, name: str, config_map: str) -> None:
        super().__init__(daemon=True)
        self.api = client.ApiClient(config.new_client_from_config(kubeconfig).configuration)
        self.namespace, self.name, self.config_map = namespace, name, config_map
        self.statuses: list[dict[str, Any]] = []
        self.seen: list[tuple[float, dict[str, Any]]] = []  # (monotonic time, status)
        self.pool_at_complete: str | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        custom = client.CustomObjectsApi(self.api)
        core = client.CoreV1Api(self.api)
        stream = watch.Watch().stream(
            custom.list_namespaced_custom_object,
            c.GROUP,
            c.VERSION,
            self.namespace,
            c.PLURAL,
            field_selector=f"metadata.name={self.name}",
            timeout_seconds=600,
        )
        for event in stream:
            status = event["object"].get("status") or {}
            self.statuses.append(status)
            self.seen.append((time.monotonic(), status))
            if (complete(status) or status.get("phase") == "Complete") and (
                self.pool_at_complete is None
            ):
                cm = core.read_namespaced_config_map(self.config_map, self.namespace)
                self.pool_at_complete = cm.data["live_proxies.txt"]
            if done(status) or self.stop.is_set():
                return


def test_refresh_end_to_end(world: World, kubectl: Kubectl) -> None:
    cands = build_candidates(
        world.bed.testbed, world.live_fixed(), fleet=18, refused=240, holes=235
    )
    assert (len(cands.urls), len(cands.live)) == (500, 25)
    url = world.lists.put(f"{kubectl.namespace}.txt", cands.text())
    watcher = Watcher(str(world.cluster.kubeconfig), kubectl.namespace, "big", "main-proxies")
    watcher.start()
    kubectl.apply(
        refresh("big", [{"url": url}], world.judge, pool="main", chunkSize=50, parallelism=3)
    )
    status = wait_status(kubectl, "big", done, 240, "Complete")
    watcher.join(timeout=30)
    assert status["phase"] == "Complete", status
    ProxyRefreshStatus.model_validate(status)  # the typed status describes what was written
    usable = cands.usable()
    assert (status["candidates"], status["checked"], status["live"]) == (500, 500, 25)
    assert status["usable"] == len(usable) == 23
    assert status["chunkSize"] == 50  # a number in the spec is taken as it is
    assert status["anonymity"] == {"transparent": 2, "anonymous": 1, "elite": 22}
    assert (status["totalChunks"], status["completedChunks"], status["progress"]) == (
        10,
        10,
        "10/10 (100%)",
    )
    cm = kubectl.get("configmap", "main-proxies")
    assert set(cm["data"]["live_proxies.txt"].split()) == usable
    entries = json.loads(cm["data"]["live_proxies.json"])
    assert {e["proxy"] for e in entries} == usable
    latencies = [e["latency_ms"] for e in entries]
    assert latencies == sorted(latencies)
    # Every event: progress never went backwards, and Complete came only
    # once the ConfigMap held the result.
    seen = [s for s in watcher.statuses if "completedChunks" in s]
    for field in ("completedChunks", "checked", "live"):
        values = [s.get(field, 0) for s in seen]
        assert values == sorted(values), (field, values)
    assert watcher.pool_at_complete is not None
    assert set(watcher.pool_at_complete.split()) == usable
    phases = [s.get("phase") for s in watcher.statuses]
    assert "Processing" in phases
    assert phases.index("Merging") < phases.index("Complete")
    jobs = kubectl.get("jobs", "-l", f"{c.LABEL_REFRESH}=big")["items"]
    assert len(jobs) == 1
    assert jobs[0]["spec"]["completions"] == 10

    def events() -> list[dict[str, Any]] | None:
        items = kubectl.get("events", "--field-selector", "involvedObject.name=big")["items"]
        ours = [e for e in items if e["involvedObject"]["kind"] == "ProxyRefresh"]
        return ours if {"Dispatched", "Complete"} <= {e["reason"] for e in ours} else None

    posted = wait_for(events, 30, "the Dispatched and Complete Events")
    # From the operator, as the pools' Events are, not "kopf" (issue 32, item 5).
    assert {e["source"]["component"] for e in posted} == {c.EVENT_COMPONENT}
    # Its log names loggers whole (kopf's own format cut them at 20 characters).
    assert "] proxyrefresh.operator [INFO]" in world.operator.logs()


def test_a_first_refresh_that_finds_nothing_completes_degraded_with_an_empty_export(
    world: World, kubectl: Kubectl
) -> None:
    """Every candidate dead, into a pool nothing ever passed into: the
    refresh completes with nothing usable, condition Degraded says so, and
    the export is written empty (not a merge retried for ever)."""
    dead = [p.url for p in world.bed.testbed.refused("127.0.1.77", 4)]
    kubectl.apply(refresh("nothing", [{"inline": dead}], world.judge, pool="none", minUsable=1))
    status = wait_status(kubectl, "nothing", done, 60, "Complete")
    assert status["phase"] == "Complete", status
    assert (status["checked"], status["live"], status["usable"]) == (4, 0, 0)
    degraded = next(x for x in status["conditions"] if x["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "TooFewUsable")
    cm = kubectl.get("configmap", "none-proxies")
    assert (cm["data"]["live_proxies.txt"], json.loads(cm["data"]["live_proxies.json"])) == ("", [])


def small(world: World, kubectl: Kubectl, name: str, holes: int = 20, **spec: Any) -> Any:
    """A refresh slow enough to interrupt: 7 live, 3 dead each per chunk, and
    black holes that cost the whole timeout."""
    cands = build_candidates(
        world.bed.testbed,
        world.live_fixed(),
        fleet=3,
        refused=10,
        holes=holes,
        refused_ip="127.0.0.42",
        holes_ip="127.0.0.44",
    )
    url = world.lists.put(f"{kubectl.namespace}-{name}.txt", cands.text())
    spec = {"chunkSize": 5, "parallelism": 2, "checker": {"timeoutSeconds": 3}, **spec}
    kubectl.apply(refresh(name, [{"url": url}], world.judge, **spec))
    return cands


def assert_exact(status: dict[str, Any], cands: Any) -> None:
    assert status["phase"] == "Complete", status
    assert status["checked"] == len(cands.urls)
    assert status["live"] == len(cands.live)
    assert status["usable"] == len(cands.usable())
    assert status["completedChunks"] == status["totalChunks"]


def test_operator_killed_mid_run_resumes_with_one_job(world: World, kubectl: Kubectl) -> None:
    cands = small(world, kubectl, "restart")
    wait_status(kubectl, "restart", phase_in("Processing"), 60, "Processing")
    world.operator.stop(kill=True)
    world.operator.start()
    status = wait_status(kubectl, "restart", done, 180, "Complete")
    assert_exact(status, cands)
    assert len(kubectl.get("jobs", "-l", f"{c.LABEL_REFRESH}=restart")["items"]) == 1


def test_worker_pod_deleted_mid_chunk_is_retried_and_counted_once(
    world: World, kubectl: Kubectl
) -> None:
    cands = small(world, kubectl, "podkill", holes=30)

    def running_pod() -> str | None:
        pods = kubectl.get("pods", "-l", f"{c.LABEL_REFRESH}=podkill")["items"]
        live = [p for p in pods if p.get("status", {}).get("phase") == "Running"]
        return live[0]["metadata"]["name"] if live else None

    victim = wait_for(running_pod, 60, "a running worker pod")
    kubectl("delete", "pod", victim, "--wait=false")
    status = wait_status(kubectl, "podkill", done, 180, "Complete")
    assert_exact(status, cands)


def test_redis_restarted_with_its_data_completes(world: World, kubectl: Kubectl) -> None:
    cands = small(world, kubectl, "aof", holes=30)
    wait_status(kubectl, "aof", lambda s: s.get("completedChunks", 0) >= 1, 60, "a chunk done")
    world.redis.restart(wipe=False)
    status = wait_status(kubectl, "aof", done, 180, "Complete")
    assert_exact(status, cands)


def stall_of(status: dict[str, Any]) -> dict[str, Any]:
    return next((x for x in status.get("conditions", []) if x["type"] == "Stalled"), {})


def test_redis_away_is_named_in_condition_stalled_and_the_refresh_resumes(
    world: World, kubectl: Kubectl
) -> None:
    """Redis down when a refresh arrives: within seconds its status says why
    it does not move, and what it is waiting for; once Redis is back it runs
    to the end, the condition cleared, and one Warning Event told of it."""
    world.redis.stop()
    try:
        cands = small(world, kubectl, "away", holes=0)
        status = wait_status(
            kubectl, "away", lambda s: stall_of(s).get("status") == "True", 45, "Stalled"
        )
        assert kubectl.get("jobs", "-l", f"{c.LABEL_REFRESH}=away")["items"] == []
    finally:
        world.redis.start()
    assert stall_of(status)["reason"] == "RedisUnavailable"
    said = stall_of(status)["message"]
    assert said == "Redis unavailable while dispatching: cannot connect"  # no address of it
    assert status["phase"] == "Scraping"  # still before any Job: nothing done to lose
    status = wait_status(kubectl, "away", done, 120, "Complete")
    assert_exact(status, cands)
    assert (stall_of(status)["status"], stall_of(status)["reason"]) == ("False", "Resumed")
    items = kubectl.get("events", "--field-selector", "involvedObject.name=away")["items"]
    warned = [e for e in items if e["reason"] == "RedisUnavailable"]
    assert [(e["type"], e.get("count", 1)) for e in warned] == [("Warning", 1)]  # not each retry


def test_redis_restarted_empty_fails_naming_the_lost_state(world: World, kubectl: Kubectl) -> None:
    small(world, kubectl, "wiped", holes=30)
    wait_status(kubectl, "wiped", phase_in("Processing"), 60, "Processing")
    world.redis.restart(wipe=True)
    status = wait_status(kubectl, "wiped", done, 120, "Failed")
    assert status["phase"] == "Failed"
    failed = next(x for x in status["conditions"] if x["type"] == "Failed")
    assert failed["status"] == "True"
    assert failed["reason"] == "StateLost"
    assert "expired or lost" in failed["message"]
    assert not complete(status)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"chunkSize": 0}, "spec.chunkSize"),
        ({"parallelism": -1}, "spec.parallelism"),
        ({"sources": []}, "spec.sources"),
        ({"checker": {"engine": "carrier-pigeon", "judges": ["http://j/"]}}, "spec.checker.engine"),
        ({"sources": [{"url": "ftp://lists.example/x.txt"}]}, "spec.sources[0].url"),
        # Accepted once, then Merging forever: now refused at admission.
        ({"output": {"configMap": "Not_A_Name"}}, "spec.output.configMap"),
        ({"retry": {"maxFailedIndexes": 4_294_967_296}}, "spec.retry.maxFailedIndexes"),
    ],
)
def test_invalid_specs_are_refused_naming_the_field(
    world: World, kubectl: Kubectl, change: dict[str, Any], field: str
) -> None:
    manifest = refresh("bad", [{"inline": ["1.2.3.4:80"]}], world.judge)
    manifest["spec"].update(change)
    result = kubectl("apply", "-f", "-", stdin=json.dumps(manifest), check=False)
    assert result.returncode != 0
    assert field in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("name", "accepted"),
    [("with.dot", False), ("x" * 62 + "-y", False), ("x" * 61 + "-y", True)],
)
def test_names_that_cannot_label_a_pod_are_refused(
    world: World, kubectl: Kubectl, name: str, accepted: bool
) -> None:
    manifest = refresh(name, [{"inline": ["1.2.3.4:80"]}], world.judge)
    manifest["spec"]["concurrencyPolicy"] = "Allow"
    result = kubectl(
        "apply", "--dry-run=server", "-f", "-", stdin=json.dumps(manifest), check=False
    )
    if accepted:
        assert result.returncode == 0, result.stderr
        return
    assert result.returncode != 0
    assert "metadata.name must be at most 63 characters" in result.stderr, result.stderr


def test_unreachable_and_garbage_sources_fail_with_their_causes(
    world: World, kubectl: Kubectl
) -> None:
    garbage = world.lists.put(f"{kubectl.namespace}-garbage.txt", "<html>nothing here</html>\n")
    unreachable = "http://127.0.0.3:1/list.txt"
    missing = garbage.replace("garbage.txt", "no-such-list.txt")
    kubectl.apply(
        refresh("nosrc", [{"url": unreachable}, {"url": garbage}, {"url": missing}], world.judge)
    )
    status = wait_status(kubectl, "nosrc", done, 120, "Failed")
    assert status["phase"] == "Failed"
    failed = next(x for x in status["conditions"] if x["type"] == "Failed")
    assert failed["reason"] == "NoCandidates"
    assert f"url {unreachable}: unreachable" in failed["message"]
    assert f"url {garbage}: no proxies in 1 lines" in failed["message"]
    assert f"url {missing}: HTTP 404" in failed["message"]
    assert [s["ok"] for s in status["sources"]] == [False, False, False]
    # kubectl get shows it Failed, not still "scraping"; -o wide says why.
    listed = kubectl("get", "proxyrefresh", "nosrc", "-o", "wide").stdout.splitlines()
    header, row = listed[0].split(), listed[1].split()
    assert header[:6] == ["NAME", "POOL", "PHASE", "PROGRESS", "LIVE", "STALLED"]
    assert row[2:4] == ["Failed", "-"]
    assert "MESSAGE" in header
    assert "unreachable" in listed[1]


def test_kubectl_explain_describes_every_field(kubectl: Kubectl) -> None:
    """Descriptions generated from the models reach `kubectl explain`."""
    for what in ("proxyrefresh.spec", "proxyrefresh.spec.checker", "proxypool.spec"):
        shown = kubectl("explain", what, namespaced=False).stdout
        assert "<no description>" not in shown, shown
    checker = kubectl("explain", "proxyrefresh.spec.checker", namespaced=False).stdout
    assert "the anonymity is judged from that" in " ".join(checker.split())
    parallelism = kubectl("explain", "proxyrefresh.spec.parallelism", namespaced=False).stdout
    assert "readyPods" in parallelism


def test_forbid_waits_for_the_pool_then_runs(world: World, kubectl: Kubectl) -> None:
    small(world, kubectl, "first", holes=10)
    wait_status(kubectl, "first", phase_in("Dispatched", "Processing"), 60, "started")
    kubectl.apply(
        refresh(
            "second",
            [{"inline": [world.live_fixed()[2].url]}],
            world.judge,
            concurrencyPolicy="Forbid",
        )
    )

    def waiting(status: dict[str, Any]) -> bool:
        return any(
            x["type"] == "Waiting" and x["status"] == "True" and x["reason"] == "PoolBusy"
            for x in status.get("conditions", [])
        )

    status = wait_status(kubectl, "second", waiting, 30, "Waiting PoolBusy")
    assert status["phase"] == "Pending"
    assert "busy with first" in status["message"]
    first = wait_status(kubectl, "first", done, 180, "first done")
    second = wait_status(kubectl, "second", done, 120, "second done")
    assert (first["phase"], second["phase"]) == ("Complete", "Complete")
    assert second["startedAt"] >= first["completedAt"]


def test_replace_stops_the_running_refresh(world: World, kubectl: Kubectl) -> None:
    small(world, kubectl, "old", holes=40)
    wait_status(kubectl, "old", phase_in("Processing"), 60, "Processing")
    kubectl.apply(
        refresh(
            "new",
            [{"inline": [world.live_fixed()[2].url]}],
            world.judge,
            concurrencyPolicy="Replace",
        )
    )
    new = wait_status(kubectl, "new", done, 120, "new done")
    old = kubectl.get("proxyrefresh", "old")["status"]
    assert new["phase"] == "Complete"
    assert old["phase"] == "Failed"
    failed = next(x for x in old["conditions"] if x["type"] == "Failed")
    assert (failed["reason"], failed["message"]) == ("Replaced", "replaced by new")
    # Its Redis keys went at once, not after their TTL.
    uid = kubectl.get("proxyrefresh", "old")["metadata"]["uid"]
    with SyncRedis.from_url(world.redis.url) as redis:
        assert redis.keys(f"proxyrefresh:{{{uid}}}:*") == []
    wait_for(
        lambda: not kubectl.get("jobs", "-l", f"{c.LABEL_REFRESH}=old")["items"],
        30,
        "the replaced refresh's Job to go",
    )


async def test_deletion_mid_run_removes_job_pods_and_redis_keys(
    world: World, kubectl: Kubectl
) -> None:
    small(world, kubectl, "doomed", holes=40)
    status = wait_status(kubectl, "doomed", phase_in("Processing"), 60, "Processing")
    uid = kubectl.get("proxyrefresh", "doomed")["metadata"]["uid"]
    store = await world.store(uid)
    assert (await store.progress()).total_chunks == status["totalChunks"]
    # Deleted within seconds: its daemon stops at once, the cleanup follows.
    kubectl("delete", "proxyrefresh", "doomed", "--timeout=5s")
    wait_for(lambda: not kubectl.get("jobs")["items"], 60, "the Job to go")
    wait_for(lambda: not kubectl.get("pods")["items"], 60, "the worker pods to go")
    keys = [k async for k in store.redis.scan_iter(f"proxyrefresh:{{{uid}}}:*")]
    assert keys == []
    await store.redis.aclose()


def test_history_keeps_five_complete_and_three_failed(world: World, kubectl: Kubectl) -> None:
    live = world.live_fixed()[2].url
    garbage = world.lists.put(f"{kubectl.namespace}-junk.txt", "junk\n")
    for i in range(7):
        kubectl.apply(
            refresh(
                f"ok-{i}", [{"inline": [live]}], world.judge, pool="hist", concurrencyPolicy="Allow"
            )
        )
    for i in range(5):
        kubectl.apply(
            refresh(
                f"bad-{i}", [{"url": garbage}], world.judge, pool="hist", concurrencyPolicy="Allow"
            )
        )

    def settled() -> list[str] | None:
        items = kubectl.get("proxyrefreshes")["items"]
        phases = [(i.get("status") or {}).get("phase") for i in items]
        if len(items) == 8 and all(p in ("Complete", "Failed") for p in phases):
            return sorted(str(p) for p in phases)
        return None

    phases = wait_for(settled, 180, "history to be pruned to 5 complete and 3 failed")
    assert phases == ["Complete"] * 5 + ["Failed"] * 3


def test_wait_for_refresh_blocks_until_complete(world: World, kubectl: Kubectl) -> None:
    live = world.live_fixed()[2].url
    spec = {"sources": [{"inline": [live]}], "checker": {"judges": [world.judge]}, "minUsable": 1}
    path = world.bed.testbed.workdir / f"{kubectl.namespace}-spec.json"
    path.write_text(json.dumps(spec))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "proxyrefresh.front.cli",
            "create",
            str(path),
            "-n",
            kubectl.namespace,
            "--wait",
            "--timeout",
            "120",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env={**world.operator.env},
    )
    assert result.returncode == 0, result.stderr
    assert "1 usable of 1 live" in result.stdout
    (item,) = kubectl.get("proxyrefreshes")["items"]
    assert item["metadata"]["name"].startswith("default-")
    assert complete(item["status"])


def test_status_follows_redis_within_a_second(world: World, kubectl: Kubectl) -> None:
    """Sampling Redis and the resource side by side: every count the pods
    publish reaches the status within a second (at most one patch a
    second, none backwards), pushed from the run's events, not polled."""
    recorder = Watcher(
        str(world.cluster.kubeconfig), kubectl.namespace, "pushed", "default-proxies"
    )
    recorder.start()
    cands = small(world, kubectl, "pushed", holes=60, chunkSize=25, parallelism=2)
    uid = wait_for(lambda: kubectl.get("proxyrefresh", "pushed")["metadata"].get("uid"), 30, "uid")
    processed_key = RUNS.keys(uid).processed
    changes: list[tuple[float, int]] = []
    with SyncRedis.from_url(world.redis.url, decode_responses=True) as redis:

        def sample() -> bool:
            raw = redis.get(processed_key)
            if raw is not None and (not changes or int(raw) != changes[-1][1]):
                changes.append((time.monotonic(), int(raw)))
            return bool(recorder.seen) and done(recorder.seen[-1][1])

        wait_for(sample, 120, "the refresh to finish", interval=0.02)
    recorder.join(timeout=30)
    assert_exact(recorder.seen[-1][1], cands)
    delays = []
    for at, value in changes:
        if value == 0:
            continue
        shown = next(t for t, s in recorder.seen if int(s.get("checked") or 0) >= value)
        delays.append(max(0.0, shown - at))
    print(f"\n  status behind Redis: median {sorted(delays)[len(delays) // 2]:.2f}s, "
          f"max {max(delays):.2f}s over {len(delays)} changes")  # fmt: skip
    assert len(delays) >= 3, changes  # the pods reported progress while they ran
    assert max(delays) <= 1.25, sorted(delays)  # 1 s, and a little for the write itself
    checked = [int(s.get("checked") or 0) for _, s in recorder.seen]
    assert checked == sorted(checked)  # never backwards
    # Status patches while processing (events that changed the status: kopf's
    # own metadata writes change nothing there), about a second apart at least.
    writes = [
        t
        for (t, s), (_, before) in zip(recorder.seen[1:], recorder.seen, strict=False)
        if s != before and s.get("phase") == "Processing"
    ]
    gaps = [b - a for a, b in itertools.pairwise(writes)]
    assert not gaps or min(gaps) >= 0.8, gaps


def test_an_operator_whose_metrics_port_is_taken_exits_saying_so(world: World) -> None:
    """Retrying cannot free a port: the operator stops at once, naming it,
    instead of retrying its start every minute with nothing reconciled."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        log = world.cluster.logs / "operator-port-taken.log"
        operator = OperatorProcess(
            world.cluster.kubeconfig,
            world.redis.url,
            log,
            PROXYREFRESH_OPERATOR_METRICS_PORT=str(port),
            PROXYREFRESH_OPERATOR_NAMESPACES='["port-taken"]',
        )
        proc = start_logged(
            [sys.executable, "-m", "proxyrefresh.front.cli", "operator"], log, env=operator.env
        )
        try:
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert code != 0
    assert f"metrics cannot listen on 127.0.0.1:{port}: Address already in use" in log.read_text()
