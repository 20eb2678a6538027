"""A refresh of paid proxies (dante-server session users, microsocks with a
password) through the operator: consumers get working proxies, and no
password lands in a ConfigMap, the status, an Event or the operator's log."""

from __future__ import annotations

import json

import pytest
from redis import Redis

from proxyrefresh.pool import Pool
from tests.e2e.conftest import World, refresh, wait_status
from tests.harness.kubectl import Kubectl

pytestmark = pytest.mark.e2e
PASSWORD = "e2e-Pa55word-x7"  # unique, so a grep finds only this test's leaks


def test_credentialed_proxies_are_pooled_without_leaking_passwords(
    world: World, kubectl: Kubectl
) -> None:
    bed = world.bed.testbed
    sessions = [f"prgw-{n}" for n in (1, 2, 3)]
    gateway = bed.dante(dict.fromkeys(sessions, PASSWORD))
    socks = bed.microsocks("127.0.0.65", auth=("buyer", PASSWORD))
    host = gateway.url.split("//")[1]
    urls = [f"socks5://{user}:{PASSWORD}@{host}" for user in sessions]
    urls.append(f"socks5://buyer:{PASSWORD}@{socks.url.split('//')[1]}")
    urls.append(f"socks5://intruder:{PASSWORD}@{socks.url.split('//')[1]}")  # wrong user
    # The paid list comes from a (local) list server, as a provider's would.
    source = world.lists.put(f"{kubectl.namespace}-paid.txt", "\n".join(urls) + "\n")
    kubectl.apply(
        refresh(
            "paid",
            [{"url": source}],
            world.judge,
            pool="paid",
            filter={"minAnonymity": "transparent"},
            minUsable=1,
        )
    )
    status = wait_status(
        kubectl, "paid", lambda s: s.get("phase") in ("Complete", "Failed"), 90, "done"
    )
    assert status["phase"] == "Complete", status
    assert (status["candidates"], status["live"], status["usable"]) == (5, 4, 4)
    assert (status["chunkSize"], status["totalChunks"]) == (5, 1)  # auto: one pod, one round
    assert "4 with credentials: passwords only in the Redis pool" in status["message"]
    cm = kubectl.get("configmap", "paid-proxies")
    entries = json.loads(cm["data"]["live_proxies.json"])
    assert sorted(e["proxy"] for e in entries) == sorted(
        [f"socks5://{user}:***@{host}" for user in sessions]
        + [f"socks5://buyer:***@{socks.url.split('//')[1]}"]
    )
    assert cm["data"]["live_proxies.txt"] == ""  # nothing a client could use as written
    # Nowhere a `view` user or a log reader looks.
    places = {
        "configmap": json.dumps(cm),
        "refresh": json.dumps(kubectl.get("proxyrefresh", "paid")),
        "events": json.dumps(kubectl.get("events")),
        "operator log": world.operator.logs(),
    }
    for where, text in places.items():
        assert PASSWORD not in text, where
    # Consumers with Redis access get every session, whole.
    with Redis.from_url(world.redis.url, decode_responses=True) as redis:
        pooled = {e.proxy for e in Pool(redis, "paid", kubectl.namespace).entries()}
    assert pooled == set(urls[:4])
