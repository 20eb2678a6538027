"""One tenant cannot stop the shared service for the others (issue 31).

Tenants act through RBAC impersonation with nothing more than `create` on
refreshes and pools. The operator runs under the chart's memory limit and
the world's Redis under the bundled Redis's maxmemory (160mb, from the
chart's values) with noeviction.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from redis import Redis

from proxyrefresh import constants as c
from tests.conftest import wait_for
from tests.e2e.conftest import World, refresh, wait_status
from tests.e2e.test_tenant import grant_tenant
from tests.harness.kubectl import Kubectl

pytestmark = pytest.mark.e2e
BIG_LINES = 1_000_000  # more than the chart's Redis can hold in a run
FITS_LINES = 200_000  # about 20 MB of chunks: fits
CHART_VALUES = Path(__file__).resolve().parents[2] / "charts" / "proxyrefresh" / "values.yaml"


@pytest.fixture
def other(kubectl: Kubectl) -> Iterator[Kubectl]:
    """A second tenant's namespace."""
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    k = Kubectl(kubectl.kubeconfig, namespace)
    k("create", "namespace", namespace, namespaced=False)
    yield k
    k("delete", "namespace", namespace, "--wait=false", namespaced=False, check=False)


@pytest.fixture
def tight_redis(world: World) -> Iterator[Redis]:
    """The world's Redis with the chart's maxmemory and noeviction, for this test."""
    redis = Redis.from_url(world.redis.url, decode_responses=True)
    maxmemory = yaml.safe_load(CHART_VALUES.read_text())["redis"]["bundled"]["maxmemory"]
    used = int(redis.info("memory")["used_memory"])
    assert used < 32 << 20, f"the world's Redis holds {used} bytes already: too full to test"
    redis.config_set("maxmemory", maxmemory)
    redis.config_set("maxmemory-policy", "noeviction")
    try:
        yield redis
    finally:
        redis.config_set("maxmemory", "0")
        redis.close()


def pool(name: str, judge: str) -> dict[str, Any]:
    template = {"sources": [{"inline": ["127.0.0.9:80"]}], "checker": {"judges": [judge]}}
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.POOL_KIND,
        "metadata": {"name": name},
        "spec": {"minUsable": 0, "template": template},
    }


def listing(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "List", "items": items}


def test_one_tenants_many_and_big_refreshes_cost_the_others_nothing(
    world: World, kubectl: Kubectl, other: Kubectl, tight_redis: Redis
) -> None:
    """Tenant A makes 110 refreshes (100 of them waiting for their pools),
    100 ProxyPools, four refreshes of 1,000,000 lines each, one of 200,000,
    and one whose sources pass the operator's total; its Jobs can start no
    pod (a quota). Meanwhile tenant B's one-proxy refresh completes within
    60 s, every pool gets its status, the 200,000 run while the 1,000,000
    ones (too big for the chart's Redis) fail naming its high-water mark,
    the one too large fails naming its limit, the operator is never killed
    and follows every channel over one connection, and Redis never stops."""
    admin, redis = kubectl, tight_redis
    admin.apply(
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "no-pods"},
            "spec": {"hard": {"pods": "0"}},
        }
    )

    def counted() -> bool:
        used = (admin.get("resourcequota", "no-pods").get("status") or {}).get("used") or {}
        return used.get("pods") == "0"

    wait_for(counted, 30, "the quota to be counted (it holds only then)")
    a, b = (grant_tenant(k, (c.PLURAL, c.POOL_PLURAL)) for k in (admin, other))
    redis_started = redis.info("server")["run_id"]
    restarts = world.operator.restarts()
    judge, proxy = world.judge, world.live_fixed()[0].url

    # Loopback candidates: were a check ever to run, nothing would leave the machine.
    lines = [f"127.{9 + i // 65536}.{i >> 8 & 255}.{i & 255}:1080\n" for i in range(BIG_LINES)]
    big_list = world.lists.put("big.txt", "".join(lines))
    fits_list = world.lists.put("fits.txt", "".join(lines[:FITS_LINES]))
    huge_list = world.lists.put("huge.txt", "127.0.0.9:8080 # padding\n" * 480_000)  # 12 MB
    items = [
        refresh(
            f"many-{p}-{i}", [{"inline": [proxy]}], judge, pool=f"p{p}", concurrencyPolicy="Forbid"
        )
        for p in range(10)
        for i in range(11)
    ]
    items += [pool(f"pool-{i}", judge) for i in range(100)]
    items += [
        refresh(
            f"big-{i}", [{"url": f"{big_list}?{i}"}], judge, pool="big", concurrencyPolicy="Allow"
        )
        for i in range(4)
    ]
    items += [refresh("fits", [{"url": fits_list}], judge, pool="fits")]
    items += [refresh("huge", [{"url": f"{huge_list}?{i}"} for i in range(3)], judge, pool="huge")]
    started = time.monotonic()
    a.apply(listing(items))

    b.apply(refresh("mine", [{"inline": [proxy]}], judge))
    mine = wait_status(other, "mine", lambda s: s.get("phase") == "Complete", 60, "Complete")
    took = time.monotonic() - started
    assert mine["live"] == 1, (mine, took)

    def pools_with_status() -> bool:
        found = json.loads(admin("get", c.POOL_PLURAL, "-o", "json").stdout)["items"]
        return sum(bool((it.get("status") or {}).get("conditions")) for it in found) == 100

    wait_for(pools_with_status, 60, "every ProxyPool to get its status")

    def decided(name: str) -> dict[str, Any]:
        return wait_status(
            admin,
            name,
            lambda s: s.get("phase") in ("Dispatched", "Processing", "Failed"),
            90,
            "admitted or refused",
        )

    assert decided("fits")["phase"] in ("Dispatched", "Processing")  # what fits runs
    big = [decided(f"big-{i}") for i in range(4)]
    for status in big:  # what cannot fit is refused before it writes a byte
        failed = next(x for x in status["conditions"] if x["type"] == "Failed")
        assert failed["reason"] == "RedisFull", failed
        assert "Redis has room for" in failed["message"]  # it stopped parsing there
        assert "high-water mark" in failed["message"]
    try:
        huge = wait_status(admin, "huge", lambda s: s.get("phase") == "Failed", 60, "Failed")
    except AssertionError as exc:
        seen = admin.get("proxyrefresh", "huge").get("status")
        raise AssertionError(
            f"{exc}\nstatus: {seen}\nrestarts: {world.operator.restarts()}\n"
            f"{world.operator.logs()[-5000:]}"
        ) from None
    failed = next(x for x in huge["conditions"] if x["type"] == "Failed")
    assert failed["reason"] == "SourcesTooLarge"
    assert "more than 33554432 bytes in all" in failed["message"]
    assert "operator.limits.scrapeMaxBytes" in failed["message"]

    listed = json.loads(admin("get", c.PLURAL, "-o", "json").stdout)["items"]
    p0 = {
        it["metadata"]["name"]: it.get("status") or {}
        for it in listed
        if it["spec"].get("pool") == "p0"
    }
    waiting = {name: st for name, st in p0.items() if st.get("phase") == "Pending"}
    assert len(waiting) == 10, p0  # one runs, ten wait their turn
    assert all("concurrencyPolicy Forbid" in st["message"] for st in waiting.values()), waiting
    following = [c for c in redis.client_list() if int(c["sub"]) > 0]
    assert len(following) == 1, following  # every refresh's and pool's channel on one
    assert int(following[0]["sub"]) >= 100 + 10
    assert redis.info("server")["run_id"] == redis_started  # Redis never stopped
    memory = redis.info("memory")
    assert int(memory["used_memory"]) <= int(memory["maxmemory"])
    assert world.operator.restarts() == restarts  # never killed, for memory or anything
