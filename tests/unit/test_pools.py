"""ProxyPool decisions without a cluster: status, refills, their manifests."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from proxyrefresh import constants as c
from proxyrefresh.api import ProxyPoolSpec, ProxyRefreshSpec
from proxyrefresh.operator import kube, pools
from proxyrefresh.operator.status import now_iso
from proxyrefresh.pool import PoolStats

SPEC = ProxyPoolSpec.model_validate(
    {
        "template": {
            "sources": [{"inline": ["http://127.0.0.1:3128"]}],
            "checker": {"judges": ["http://127.0.0.1:8080/"]},
            "output": {"configMap": "from-template"},
        },
        "minUsable": 10,
        "refillCooldownSeconds": 60,
    }
)
BODY: dict[str, Any] = {
    "metadata": {"name": "eu", "namespace": "proxies", "uid": "u-1", "generation": 2},
    "spec": SPEC.model_dump(by_alias=True),
}


def test_refill_only_below_the_minimum_and_never_twice_at_once() -> None:
    now = 1_000_000.0
    assert not pools.refill_decision(SPEC, 10, {}, [], now).start
    go = pools.refill_decision(SPEC, 9, {}, [], now)
    assert go.start
    assert "9 usable, fewer than minUsable 10" in go.why
    busy = pools.refill_decision(SPEC, 0, {}, ["eu-refill-1"], now)
    assert not busy.start
    assert "eu-refill-1" in busy.why
    recent = {"lastRefillAt": now_iso()}
    import time

    assert not pools.refill_decision(SPEC, 0, recent, [], time.time()).start
    assert pools.refill_decision(SPEC, 0, recent, [], time.time() + 61).start
    never = SPEC.model_copy(update={"min_usable": 0})
    assert not pools.refill_decision(never, 0, {}, [], now).start


def test_a_refill_is_the_template_owned_by_its_pool() -> None:
    manifest = pools.refill_manifest(BODY, SPEC, 3, "9 usable")
    assert manifest["metadata"]["name"] == "eu-refill-3"
    assert manifest["metadata"]["labels"] == {c.LABEL_POOL: "eu", c.LABEL_REFILL: "true"}
    assert manifest["metadata"]["annotations"] == {c.ANNOTATION_REFILL_REASON: "9 usable"}
    (owner,) = manifest["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("ProxyPool", "u-1", True)
    spec = ProxyRefreshSpec.model_validate(manifest["spec"])
    assert spec.pool == "eu"
    assert spec.output_config_map == "from-template"
    long = pools.refill_name("p" * 63, 123456)
    assert len(long) <= 63
    assert long.endswith("-refill-123456")


def test_status_says_size_usable_and_below_minimum() -> None:
    stats = PoolStats(12, 9, {"http": 12, "socks5": 0}, {"elite": 12})
    fields = pools.status_fields(stats, SPEC, {}, 2)
    assert (fields["size"], fields["usable"]) == (12, 9)
    assert fields["protocols"] == {"http": 12}
    conditions = {cond["type"]: cond for cond in fields["conditions"]}
    assert conditions["BelowMinimum"]["status"] == "True"
    assert conditions["Ready"]["status"] == "False"
    assert conditions["Ready"]["observedGeneration"] == 2
    # Ready says what it is measured against (issue 32, item 5).
    assert conditions["Ready"]["message"] == f"9 usable of 12, minUsable {SPEC.min_usable}"
    fine = pools.status_fields(PoolStats(12, 12), SPEC, fields, 2)
    assert {cond["type"]: cond["status"] for cond in fine["conditions"]} == {
        "Ready": "True",
        "BelowMinimum": "False",
    }


def test_a_pool_that_redis_does_not_answer_says_so_until_a_look_goes_through() -> None:
    fields = pools.status_fields(PoolStats(12, 12), SPEC, {}, 2)
    stalled = pools.stalled_fields(fields, "RedisUnavailable", "Redis unavailable: refused", 2)
    shown = {cond["type"]: cond for cond in stalled["conditions"]}
    assert (shown["Stalled"]["status"], shown["Stalled"]["reason"]) == ("True", "RedisUnavailable")
    assert shown["Ready"]["status"] == "True"  # the last counts stand, said to be old
    again = pools.stalled_fields(
        {**fields, **stalled}, "RedisUnavailable", "Redis unavailable: refused", 2
    )
    assert again == stalled  # the same cause: nothing new to write
    back = pools.status_fields(PoolStats(12, 12), SPEC, {**fields, **stalled}, 2)
    shown = {cond["type"]: cond for cond in back["conditions"]}
    assert (shown["Stalled"]["status"], shown["Stalled"]["reason"]) == ("False", "Resumed")
    never = pools.status_fields(PoolStats(12, 12), SPEC, fields, 2)
    assert "Stalled" not in {cond["type"] for cond in never["conditions"]}


def test_scoring_comes_from_the_pool_or_the_defaults() -> None:
    scoring, age = pools.scoring_of(None)
    assert (scoring.success, scoring.failure, scoring.max_failures, age) == (1.1, 0.5, 3, None)
    body = {**BODY, "spec": {**BODY["spec"], "scoring": {"failure": 0.25}, "maxAgeSeconds": 3600}}
    scoring, age = pools.scoring_of(body)
    assert (scoring.failure, age) == (0.25, 3600)


class FakeApi:
    """The API calls a refill makes, and an operator killed after one of them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.refreshes: dict[str, dict[str, Any]] = {}
        self.events: dict[str, dict[str, Any]] = {}
        self.status: dict[str, Any] = {}
        self.kill_after: str | None = None
        monkeypatch.setattr(kube, "list_refreshes", self.list_refreshes)
        monkeypatch.setattr(kube, "create_refresh", self.create_refresh)
        monkeypatch.setattr(kube, "create_event", self.create_event)
        monkeypatch.setattr(kube, "patch_pool_status", self.patch_pool_status)

    def cut(self, step: str) -> None:
        if self.kill_after == step:
            self.kill_after = None
            raise asyncio.CancelledError(f"killed after {step}")

    async def list_refreshes(self, namespace: str) -> list[dict[str, Any]]:
        return list(self.refreshes.values())

    def create(self, kept: dict[str, dict[str, Any]], manifest: dict[str, Any], step: str) -> bool:
        """kube.create_if_missing: False (a 409) when the name is taken."""
        name = manifest["metadata"]["name"]
        created = name not in kept
        kept.setdefault(name, manifest)
        self.cut(step)
        return created

    async def create_refresh(self, manifest: dict[str, Any]) -> bool:
        return self.create(self.refreshes, manifest, "create")

    async def create_event(self, manifest: dict[str, Any]) -> bool:
        return self.create(self.events, manifest, "event")

    async def patch_pool_status(self, namespace: str, name: str, fields: dict[str, Any]) -> None:
        self.status.update(fields)

    def body(self) -> dict[str, Any]:
        return {**BODY, "status": dict(self.status)}


@pytest.mark.parametrize("kill_after", [None, "create", "event"])
def test_a_refill_cut_off_anywhere_is_started_once_and_reported_once(
    monkeypatch: pytest.MonkeyPatch, kill_after: str | None
) -> None:
    api = FakeApi(monkeypatch)
    api.kill_after = kill_after
    watch = pools.PoolWatch(redis=None)

    async def steps() -> None:
        for _ in range(3):  # the first step may be killed; a restarted one follows
            with contextlib.suppress(asyncio.CancelledError):
                api.status.update(await watch.maybe_refill(api.body(), SPEC, 3))

    asyncio.run(steps())
    assert list(api.refreshes) == ["eu-refill-1"]
    (event,) = api.events.values()
    assert (event["reason"], event["involvedObject"]["uid"]) == ("Refill", "u-1")
    assert event["message"] == "3 usable, fewer than minUsable 10: started refresh eu-refill-1"
    assert (api.status["refillsStarted"], api.status["lastRefill"]) == (1, "eu-refill-1")


def test_the_shipped_pool_example_starts_nothing_until_it_is_yours() -> None:
    """Applied as shipped, manifests/examples/pool.yaml must not start a
    refill against placeholder hosts (issue 32, item 9)."""
    from pathlib import Path

    import yaml

    from proxyrefresh.api import ProxyPoolSpec

    example = Path(__file__).resolve().parents[2] / "manifests" / "examples" / "pool.yaml"
    spec = ProxyPoolSpec.model_validate(yaml.safe_load(example.read_text())["spec"])
    assert spec.min_usable == 0


def test_a_pools_consumer_user_is_the_same_each_time_and_its_secret_goes_with_the_pool() -> None:
    """Issue 34: the operator makes a pool's user again after a Redis
    restart: the same name and password each time (from its key), unique
    per pool; the Secret it writes names only the user's URL, owned by the
    pool; condition AccessReady says whether the user is kept, or why not."""
    from proxyrefresh.operator import pool_access
    from proxyrefresh.operator.pools import access_condition

    def password(key: str, namespace: str, name: str) -> str:
        return pool_access.user(namespace, name).password(key)

    assert password("k", "a", "p") == password("k", "a", "p")
    assert password("k", "a", "p") != password("k", "b", "p")
    assert password("k", "a", "p") != password("other", "a", "p")
    assert pool_access.user("team", "eu").name == "proxyrefresh-pool:team/eu"
    assert ">" + password("k", "team", "eu") in pool_access.user("team", "eu").rules(
        password("k", "team", "eu")
    )
    body = {"metadata": {"name": "eu", "namespace": "team", "uid": "u-1"}}
    secret = pool_access.secret_manifest(body, "eu-redis", "redis://u:p@redis:6379/0")
    assert secret["metadata"]["namespace"] == "team"
    assert secret["stringData"] == {"url": "redis://u:p@redis:6379/0"}
    (owner,) = secret["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("ProxyPool", "eu", "u-1")
    (kept,) = access_condition([], None, 3)
    assert (kept["type"], kept["status"], kept["reason"]) == ("AccessReady", "True", "UserKept")
    (refused,) = access_condition([], "Redis refused the pool's user (NOPERM)", 3)
    assert (refused["status"], refused["reason"]) == ("False", "AccessUnavailable")
    assert "NOPERM" in refused["message"]


def test_the_pages_viewer_user_is_kept_read_only_and_its_secret_named_whole() -> None:
    """Issue 34: the operator keeps the live page's user with the viewer's
    rules (read, follow events, nothing else); its Secret is named as
    NAMESPACE/NAME, and anything else is refused by name at start."""
    from pydantic import ValidationError

    from proxyrefresh.operator import viewer_access
    from proxyrefresh.operator.settings import OperatorSettings

    viewer = viewer_access.VIEWER
    rules = viewer.rules(viewer.password("k"))
    assert rules[:3] == ["reset", "on", ">" + viewer.password("k")]
    assert "+@read" in rules
    assert "-@dangerous" in rules
    assert not any(rule.startswith("+@write") or rule == "+@all" for rule in rules)
    secret = viewer_access.secret_manifest("proxyrefresh", "pr-viewer", "redis://v:p@r:6379/0")
    assert (secret["metadata"], secret["stringData"]) == (
        {
            "name": "pr-viewer",
            "namespace": "proxyrefresh",
            "labels": {c.LABEL_MANAGED_BY: c.MANAGED_BY, c.LABEL_COMPONENT: "ui"},
        },
        {"url": "redis://v:p@r:6379/0"},
    )
    assert OperatorSettings(viewer_secret="proxyrefresh/pr-viewer").viewer_secret
    with pytest.raises(ValidationError, match="viewer_secret"):
        OperatorSettings(viewer_secret="pr-viewer")
