"""One writer per object: a status is written only by its own object's loop.

Every status write goes through kube.patch_object_status, which refuses a
write from a task that is not the object's own daemon (kube.WRITER). These
tests run the operator's steps against a recording API at that level, so a
step that wrote another object's status would fail them.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pytest

from proxyrefresh import constants as c
from proxyrefresh.api import Phase
from proxyrefresh.operator import context, kube, memory, phase_pending, reconcile, transition
from proxyrefresh.operator.scrape_slots import ScrapeSlots
from proxyrefresh.operator.settings import OperatorSettings
from proxyrefresh.operator.subscriptions import Subscriptions
from proxyrefresh.operator.turns import PoolTurns
from proxyrefresh.settings import NetworkSettings, RedisSettings

NS = "team-a"
BASE = f"/apis/{c.API_VERSION}/namespaces/{NS}/proxyrefreshes"


class RecordingApi:
    """kube.call, recorded: every request's method, path and body."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, items: list[dict[str, Any]]) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.items = items
        monkeypatch.setattr(kube, "call", self.call)

    async def call(self, method: str, resource: str, body: Any = None, **_: Any) -> Any:
        self.calls.append((method, resource, body))
        if method == "GET" and resource.endswith("/proxyrefreshes"):
            return {"items": self.items}
        return {}

    def status_writes(self) -> list[str]:
        return [path for method, path, _ in self.calls if method == "PATCH" and "/status" in path]


def refresh_body(name: str, uid: str, created: str, **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.KIND,
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": uid,
            "generation": 1,
            "creationTimestamp": created,
        },
        "spec": {
            "pool": "eu",
            "sources": [{"inline": ["127.0.0.1:3128"]}],
            "checker": {"judges": ["http://127.0.0.1:1/judge"]},
            "concurrencyPolicy": "Replace",
        },
        "status": status,
    }


class NoAcl:
    """The Redis calls a failing step makes: its run's user goes."""

    async def execute_command(self, *command: str) -> int:
        assert command[:2] == ("ACL", "DELUSER"), command
        return 0


def make_context() -> context.Context:
    redis: Any = NoAcl()
    return context.Context(
        OperatorSettings(), RedisSettings(), redis, NetworkSettings(),
        subscriptions=Subscriptions(redis), memory=memory.RedisMemory(redis, 0.8),
        scrape_slots=ScrapeSlots(1, 1), pool_turns=PoolTurns(),
    )  # fmt: skip


def as_daemon_of(name: str, step: Any) -> Any:
    """Run ``step`` as the daemon of refresh ``name`` runs it: in a context
    of its own that owns that refresh's status."""

    async def run() -> Any:
        kube.writes(c.PLURAL, NS, name)
        return await step()

    return asyncio.run(run())


def test_a_status_write_from_another_objects_loop_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api = RecordingApi(monkeypatch, [])
    as_daemon_of("mine", lambda: kube.patch_status(NS, "mine", {"message": "ok"}))
    assert api.status_writes() == [f"{BASE}/mine/status"]
    with pytest.raises(kube.NotTheWriter, match="proxyrefreshes team-a/other: status written by"):
        as_daemon_of("mine", lambda: kube.patch_status(NS, "other", {"message": "no"}))
    with pytest.raises(kube.NotTheWriter, match="proxypools team-a/eu"):
        as_daemon_of("mine", lambda: kube.patch_pool_status(NS, "eu", {"size": 1}))
    # Outside any daemon (a handler, a test, a tool): no status write at all.
    with pytest.raises(kube.NotTheWriter, match="no daemon"):
        contextvars.Context().run(asyncio.run, kube.patch_status(NS, "mine", {"message": "no"}))
    assert len(api.status_writes()) == 1


def test_replace_asks_the_older_refresh_to_stop_and_writes_only_its_own_status(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old = refresh_body("old", "u-old", "2026-01-01T00:00:00Z", phase="Processing")
    new = refresh_body("new", "u-new", "2026-01-01T00:01:00Z", phase="Pending")
    api = RecordingApi(monkeypatch, [old, new])
    ctx = make_context()

    async def step_new() -> transition.Transition:
        t = transition.Transition(transition.Refresh(new))
        assert not await phase_pending.may_start(ctx, t)
        await transition.commit(ctx, t)
        return t

    t = as_daemon_of("new", step_new)
    assert t.status["message"] == "stopping old (concurrencyPolicy Replace)"
    waiting = next(x for x in t.status["conditions"] if x["type"] == "Waiting")
    assert (waiting["status"], waiting["reason"]) == ("True", "Replacing")
    patches = [(path, body) for method, path, body in api.calls if method == "PATCH"]
    assert patches[0] == (
        f"{BASE}/old",
        {"metadata": {"uid": "u-old", "annotations": {c.ANNOTATION_REPLACED_BY: "new"}}},
    )
    assert api.status_writes() == [f"{BASE}/new/status"]  # never old's

    # The old refresh's own loop reads the annotation and fails itself.
    old["metadata"]["annotations"] = {c.ANNOTATION_REPLACED_BY: "new"}
    api.calls.clear()

    async def step_old() -> transition.Transition:
        t = transition.Transition(transition.Refresh(old))
        await reconcile.advance(ctx, t)
        t.after.clear()  # deleting the Job and keys needs Redis: not this test's part
        await transition.commit(ctx, t)
        return t

    t = as_daemon_of("old", step_old)
    assert t.status["phase"] == Phase.FAILED.value
    failed = next(x for x in t.status["conditions"] if x["type"] == "Failed")
    assert (failed["reason"], failed["message"]) == ("Replaced", "replaced by new")
    assert api.status_writes() == [f"{BASE}/old/status"]
