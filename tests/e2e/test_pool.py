"""The living pool on the real control plane: a ProxyPool fills itself,
consumers wear it down through reports, and it refills exactly once."""

from __future__ import annotations

import base64
import contextlib
import json
import sys
import time
from typing import Any

import pytest
import requests
from redis import Redis
from redis.exceptions import AuthenticationError, NoPermissionError

from proxyrefresh.api import ProxyPoolStatus
from proxyrefresh.pool import NotInPool, Pool
from tests.conftest import run_cli, wait_for
from tests.e2e.conftest import VIEWER_SECRET, World, phase_in, refresh, wait_status
from tests.harness import rotator as rot
from tests.harness.kubectl import Kubectl
from tests.harness.scenario import build_candidates
from tests.harness.testbed import ROOT, free_port, start_logged

pytestmark = pytest.mark.e2e


def proxy_pool(name: str, url: str, judge: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "proxyrefresh.dev/v1alpha1",
        "kind": "ProxyPool",
        "metadata": {"name": name},
        "spec": {
            "template": {
                "sources": [{"url": url}],
                "checker": {"judges": [judge], "timeoutSeconds": 2},
                "chunkSize": 10,
                "parallelism": 2,
                "minUsable": 1,
                "filter": {"minAnonymity": "elite"},
            },
            **spec,
        },
    }


def refills(kubectl: Kubectl, pool: str) -> dict[str, str]:
    items = kubectl.get("proxyrefresh", "-l", f"proxyrefresh.dev/pool={pool}")["items"]
    return {it["metadata"]["name"]: (it.get("status") or {}).get("phase", "") for it in items}


def pool_status(kubectl: Kubectl, name: str) -> dict[str, Any]:
    return dict(kubectl.get("proxypool", name).get("status") or {})


def test_a_pool_fills_itself_and_refills_once_when_worn_down(
    world: World, kubectl: Kubectl
) -> None:
    cands = build_candidates(world.bed.testbed, [], fleet=12, refused=10, holes=0)
    url = world.lists.put(f"{kubectl.namespace}-pool.txt", cands.text())
    kubectl.apply(proxy_pool("mine", url, world.judge, minUsable=10, refillCooldownSeconds=5))
    # Empty, so below its minimum: the pool starts its first refill by itself.
    wait_for(
        lambda: refills(kubectl, "mine").get("mine-refill-1") == "Complete",
        120,
        "the first refill to complete",
    )
    status = wait_for(
        lambda: (s := pool_status(kubectl, "mine")).get("usable") == 12 and s, 30, "usable 12"
    )
    ProxyPoolStatus.model_validate(status)
    assert (status["size"], status["refillsStarted"], status["lastRefresh"]) == (
        12,
        1,
        "mine-refill-1",
    )
    assert status["exported"] == 12
    env = {"PROXYREFRESH_REDIS_URL": world.redis.url}
    stats = run_cli("pool", "stats", "mine", "-n", kubectl.namespace, "--json", env=env)
    assert json.loads(stats.stdout)["size"] == 12, stats.stderr
    # Past the cooldown, consumers report three proxies failing: 9 usable.
    started = time.time()
    wait_for(lambda: time.time() - started > 5, 10, "the refill cooldown to pass")
    redis = Redis.from_url(world.redis.url, decode_responses=True)
    pool = Pool(redis, "mine", kubectl.namespace)
    proxies = sorted(e.proxy for e in pool.entries())
    for proxy in proxies[:3]:
        pool.report(proxy, False)
    dropped = time.monotonic()
    assert pool.stats().usable == 9
    # More failures keep arriving; the operator is restarted in the middle:
    # still exactly one more refill, started within 10 s of the drop.
    for i in range(100):
        with contextlib.suppress(NotInPool):  # the third failure drops a proxy
            pool.report(proxies[i % len(proxies)], False)
    wait_for(lambda: "mine-refill-2" in refills(kubectl, "mine"), 10, "a refill")
    assert time.monotonic() - dropped < 10
    world.operator.stop(kill=True)
    world.operator.start()
    wait_for(
        lambda: refills(kubectl, "mine").get("mine-refill-2") == "Complete",
        120,
        "the second refill to complete",
    )
    status = wait_for(
        lambda: (s := pool_status(kubectl, "mine")).get("usable") == 12 and s,
        30,
        "the pool lifted back to 12 usable",
    )
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {"Ready": "True", "BelowMinimum": "False"}
    assert status["refillsStarted"] == 2
    assert set(refills(kubectl, "mine")) == {"mine-refill-1", "mine-refill-2"}
    events = kubectl.get("events", "--field-selector", "involvedObject.name=mine")["items"]
    # One Event per refill, the one started across the kill included.
    reported = sorted(e["message"].rsplit(" ", 1)[-1] for e in events if e["reason"] == "Refill")
    assert reported == ["mine-refill-1", "mine-refill-2"], events
    # Deleting the pool takes its refreshes and its Redis keys along.
    kubectl("delete", "proxypool", "mine", "--wait=true", timeout=60)
    wait_for(lambda: not refills(kubectl, "mine"), 60, "the refills to be collected")
    assert not pool.exists()
    redis.close()


def test_a_pool_of_5000_is_whole_in_redis_and_bounded_in_its_configmap(
    world: World, kubectl: Kubectl
) -> None:
    cands = build_candidates(
        world.bed.testbed, [], fleet=5000, refused=0, holes=0, fleet_ip="127.0.0.44"
    )
    url = world.lists.put(f"{kubectl.namespace}-5k.txt", cands.text())
    kubectl.apply(
        refresh(
            "five", [{"url": url}], world.judge, pool="big", chunkSize=1250, parallelism=4,
            checker={"timeoutSeconds": 5, "concurrency": 256},
        )
    )  # fmt: skip
    status = wait_status(kubectl, "five", phase_in("Complete", "Failed"), 300, "done")
    assert status["phase"] == "Complete", status
    assert (status["candidates"], status["live"], status["usable"]) == (5000, 5000, 5000)
    assert status["poolSize"] == 5000
    cm = kubectl.get("configmap", "big-proxies")
    size = sum(len(v.encode()) for v in cm["data"].values())
    exported = len(json.loads(cm["data"]["live_proxies.json"]))
    assert size <= 900_000 < 1024 * 1024
    assert 2000 < exported == status["exported"] < 5000
    assert f"pool big holds 5000, {exported} of them in ConfigMap big-proxies" in status["message"]
    env = {"PROXYREFRESH_REDIS_URL": world.redis.url}
    stats = run_cli("pool", "stats", "big", "-n", kubectl.namespace, "--json", env=env)
    assert json.loads(stats.stdout)["size"] == 5000, stats.stderr


def test_a_pool_that_redis_does_not_answer_says_so_and_recovers(
    world: World, kubectl: Kubectl
) -> None:
    """Its counts stand still while Redis is away: condition Stalled says so
    within seconds, and the first look that goes through clears it."""
    url = world.lists.put(f"{kubectl.namespace}-idle.txt", "")
    kubectl.apply(proxy_pool("idle", url, world.judge, minUsable=0))  # never refills
    wait_for(lambda: "size" in pool_status(kubectl, "idle"), 30, "the pool's first status")

    def stall(status: str) -> dict[str, Any] | None:
        conditions = pool_status(kubectl, "idle").get("conditions") or []
        found = next((x for x in conditions if x["type"] == "Stalled"), None)
        return found if found and found["status"] == status else None

    world.redis.stop()
    try:
        said = wait_for(lambda: stall("True"), 45, "condition Stalled on the pool")
    finally:
        world.redis.start()
    assert said["reason"] == "RedisUnavailable"
    assert said["message"] == "Redis unavailable: cannot connect"  # no address of it
    cleared = wait_for(lambda: stall("False"), 60, "condition Stalled cleared")
    assert cleared["reason"] == "Resumed"
    ProxyPoolStatus.model_validate(pool_status(kubectl, "idle"))


def secret_url(namespace: str, name: str, kubectl: Kubectl) -> str | None:
    found = kubectl("get", "secret", name, "-n", namespace, "-o", "json", check=False)
    if found.returncode != 0:
        return None
    return base64.b64decode(json.loads(found.stdout)["data"]["url"]).decode()


def authenticates(url: str) -> bool:
    with Redis.from_url(url) as client:
        try:
            return bool(client.ping())
        except AuthenticationError:
            return False


def test_the_rotator_and_the_page_on_kept_users_serve_again_after_a_redis_restart(
    world: World, kubectl: Kubectl
) -> None:
    """Issue 34: a pool with spec.access gets a least-privilege Redis user
    from the operator, its URL in a Secret, and the live page a read-only
    one (PROXYREFRESH_OPERATOR_VIEWER_SECRET). A rotator and a page on them
    serve; after a Redis restart that forgot every ACL user, the operator
    makes them again and both serve again by themselves within 30 s (their
    /readyz says what they meet meanwhile). The pool's user reaches its own
    pool and nothing else."""
    url = world.lists.put(f"{kubectl.namespace}-served.txt", "")
    access = {"secretName": "served-redis"}
    kubectl.apply(proxy_pool("served", url, world.judge, minUsable=0, access=access))
    ns = kubectl.namespace
    consumer = wait_for(lambda: secret_url(ns, "served-redis", kubectl), 30, "the pool's Secret")
    viewer_ns, _, viewer_name = VIEWER_SECRET.partition("/")
    viewer = wait_for(lambda: secret_url(viewer_ns, viewer_name, kubectl), 30, "the page's Secret")
    http = [p for p in world.live_fixed() if p.url.startswith("http://")]
    rot.fill(world.redis.url, ns, "served", http)
    with Redis.from_url(consumer) as mine:
        assert Pool(mine, "served", ns).stats().size == len(http)
        with pytest.raises(NoPermissionError):
            mine.get("proxyrefresh:pool:{other/pool}:entries")
    # (A Redis restarted by an earlier test forgot it: it is back within seconds.)
    wait_for(lambda: authenticates(viewer), 30, "the page's user")
    with Redis.from_url(viewer) as page_user, pytest.raises(NoPermissionError):
        page_user.set("proxyrefresh:pool:{x/y}:entries", "1")  # it may only read
    r = rot.start(world.bed.testbed.workdir, consumer, "served", ns)
    page_port = free_port("127.0.0.1")
    page = start_logged(
        [sys.executable, "-m", "proxyrefresh.front.cli", "ui", "--listen",
         f"127.0.0.1:{page_port}", "-n", ns],
        world.cluster.logs / f"ui-{ns}.log",
        env={**world.operator.env, "PROXYREFRESH_REDIS_URL": viewer},
        cwd=ROOT,
    )  # fmt: skip
    page_ready = f"http://127.0.0.1:{page_port}/readyz"

    def served() -> bool:
        try:
            got = requests.get(world.judge, proxies={"http": r.proxy}, timeout=10)
            ready = requests.get(r.api + "/readyz", timeout=5)
            shown = requests.get(page_ready, timeout=5)
        except requests.RequestException:
            return False
        return (got.status_code, ready.status_code, shown.status_code) == (200, 200, 200)

    try:
        wait_for(served, 30, "the rotator and the page to serve")
        world.redis.restart(wipe=False)  # no ACL file: it forgets every user
        restarted = time.monotonic()
        wait_for(served, 30, "the rotator and the page to serve again on their users")
        assert time.monotonic() - restarted < 30
    finally:
        r.stop()
        page.terminate()
        page.wait(timeout=10)
    conditions = pool_status(kubectl, "served").get("conditions") or []
    (ready,) = [x for x in conditions if x["type"] == "AccessReady"]
    assert (ready["status"], ready["reason"]) == ("True", "UserKept")


def test_a_pool_named_what_a_refresh_cannot_name_is_refused(world: World, kubectl: Kubectl) -> None:
    """Its refreshes say its name in spec.pool, which is a DNS label: a dot
    would have been accepted here and failed every refill after."""
    pool = proxy_pool("eu.west", "http://127.0.0.1:1/list.txt", world.judge)
    result = kubectl("apply", "-f", "-", stdin=json.dumps(pool), check=False)
    assert result.returncode != 0
    assert "metadata.name must be at most 63 characters of a-z, 0-9 and '-'" in result.stderr
    assert "it names the pool" in result.stderr
