"""ProxyPool decisions without a cluster: status, refills, their manifests."""

from __future__ import annotations

from typing import Any

from proxyrefresh import constants as c
from proxyrefresh.api import ProxyPoolSpec, ProxyRefreshSpec
from proxyrefresh.operator import pools
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
    manifest = pools.refill_manifest(BODY, SPEC, 3)
    assert manifest["metadata"]["name"] == "eu-refill-3"
    assert manifest["metadata"]["labels"] == {c.LABEL_POOL: "eu", c.LABEL_REFILL: "true"}
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
    fine = pools.status_fields(PoolStats(12, 12), SPEC, fields, 2)
    assert {cond["type"]: cond["status"] for cond in fine["conditions"]} == {
        "Ready": "True",
        "BelowMinimum": "False",
    }


def test_scoring_comes_from_the_pool_or_the_defaults() -> None:
    scoring, age = pools.scoring_of(None)
    assert (scoring.success, scoring.failure, scoring.max_failures, age) == (1.1, 0.5, 3, None)
    body = {**BODY, "spec": {**BODY["spec"], "scoring": {"failure": 0.25}, "maxAgeSeconds": 3600}}
    scoring, age = pools.scoring_of(body)
    assert (scoring.failure, age) == (0.25, 3600)
