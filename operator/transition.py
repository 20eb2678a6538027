"""One step's write: the refresh as the step sees it, and what it changes.

A step reads the world, builds a Transition in memory and commits it
once (as kubernetes-sigs/jobset does): the status fields, then the Events,
then work that must wait for the write (pruning the history).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from proxyrefresh import constants as c
from proxyrefresh import redact
from proxyrefresh.api import (
    STALLED,
    Phase,
    ProxyRefreshSpec,
    ProxyRefreshStatus,
    finished,
    true_condition,
)
from proxyrefresh.operator import dispatch, kube
from proxyrefresh.operator.apiclient import ApiError
from proxyrefresh.operator.context import Context
from proxyrefresh.operator.status import changes, now_iso, set_condition

log = logging.getLogger("proxyrefresh.operator")


@dataclass
class Refresh:
    body: dict[str, Any]
    # Pacing (operator/driver.py): a write that only moves the counters waits
    # until then; written_at is when the last write landed (monotonic).
    not_before: float = 0.0
    written_at: float = 0.0
    # The status last read through the model, and the dict it was read from.
    _typed: tuple[dict[str, Any], ProxyRefreshStatus] | None = field(
        default=None, repr=False, compare=False
    )

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.body["metadata"]["namespace"])

    @property
    def uid(self) -> str:
        return str(self.body["metadata"]["uid"])

    @property
    def generation(self) -> int | None:
        generation = self.body["metadata"].get("generation")
        return int(generation) if generation is not None else None

    @property
    def status(self) -> dict[str, Any]:
        """The status as the API has it: what a write is merged into."""
        return dict(self.body.get("status") or {})

    @property
    def state(self) -> ProxyRefreshStatus:
        """The status read through its model, once per status written: what
        a step reads, by name, instead of by string keys."""
        raw = self.body.get("status") or {}
        if self._typed is None or self._typed[0] is not raw:
            self._typed = (raw, ProxyRefreshStatus.model_validate(raw))
        return self._typed[1]

    @property
    def pool(self) -> str:
        """The pool it names, read without validating the spec (a refresh
        with an invalid spec is still counted, as Failed)."""
        return str((self.body.get("spec") or {}).get("pool") or "default")

    @property
    def spec(self) -> ProxyRefreshSpec:
        return ProxyRefreshSpec.model_validate(self.body.get("spec") or {})

    @property
    def replaced_by(self) -> str | None:
        """The newer refresh that asked this one to stop (Replace), if one did."""
        annotations = self.body["metadata"].get("annotations") or {}
        return annotations.get(c.ANNOTATION_REPLACED_BY) or None

    @property
    def job_name(self) -> str:
        """The Job's name, as recorded, else derived (never a second Job)."""
        return self.state.job_name or dispatch.job_name(self.name, self.uid)


async def patch(ctx: Context, refresh: Refresh, fields: dict[str, Any]) -> None:
    """Patch the status and keep the local copy in step."""
    delta = changes(refresh.status, fields)
    if not delta:
        return
    delta["observedGeneration"] = refresh.generation
    # The typed status is the contract: a write it does not describe is a bug here.
    ProxyRefreshStatus.model_validate({**refresh.status, **delta})
    if "phase" not in delta:  # progress: at most about one write a second
        await asyncio.sleep(max(0.0, refresh.not_before - time.monotonic()))
    await kube.patch_status(refresh.namespace, refresh.name, delta)
    refresh.written_at = time.monotonic()
    ctx.patches["status"] += 1
    refresh.body["status"] = {**refresh.status, **delta}
    ctx.metrics.patches.labels("refresh").inc()
    ctx.metrics.refresh_written(refresh.uid, refresh.namespace, refresh.pool, refresh.status)


@dataclass
class Transition:
    """What one step changes, built in memory and written once (as
    kubernetes-sigs/jobset does): the status fields, the Events to post once
    the write landed, and work to do after it (pruning the history)."""

    refresh: Refresh
    fields: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[str, str, bool]] = field(default_factory=list)
    after: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    failing: bool = False
    again: bool = False  # the refresh may step again at once, in the same phase

    @property
    def status(self) -> dict[str, Any]:
        """The status as it will be once written."""
        return {**self.refresh.status, **self.fields}

    def set(self, **fields: Any) -> None:
        self.fields.update(fields)

    def condition(self, kind: str, status: bool, reason: str, message: str) -> None:
        conditions = set_condition(
            self.status.get("conditions"), kind, status, reason, message, self.refresh.generation
        )
        self.fields["conditions"] = conditions

    def note(self, reason: str, message: str, warning: bool = False) -> None:
        self.events.append((reason, message, warning))

    def fail(self, reason: str, message: str) -> None:
        message = redact.one_line(message)
        self.condition("Failed", True, reason, message)
        self.condition("Complete", False, reason, message)
        self.set(phase=Phase.FAILED.value, message=message, completedAt=now_iso())
        if not ProxyRefreshStatus.model_validate(self.status).total_chunks:
            # "scraping" or "waiting" would read as if it still did that.
            self.set(progress="-")
        self.note(reason, message, warning=True)
        self.failing = True


def note(ctx: Context, reason: str, message: str, warning: bool = False) -> None:
    log.info("%s: %s", reason, message)
    if ctx.events is not None:
        ctx.events(reason, message, warning)


async def commit(ctx: Context, t: Transition) -> None:
    """Write the transition once; post its Events only if the write landed.
    Only the refresh's own loop writes its status (kube.WRITER), so nothing
    can have ended it meanwhile but a deletion: then there is nothing to say."""
    refresh = t.refresh
    if t.failing:
        with contextlib.suppress(RedisError):
            await ctx.run(refresh.uid).revoke()
    try:
        await patch(ctx, refresh, t.fields)
    except ApiError as exc:
        if not kube.not_found(exc):
            raise
        log.info("%s/%s is gone; this step stops", refresh.namespace, refresh.name)
        return
    for reason, message, warning in t.events:
        note(ctx, reason, message, warning)
    for work in t.after:
        await work()
    if finished(t.fields.get("phase")):
        log.info(
            "%s/%s: status patches sent by this operator so far: %d",
            refresh.namespace,
            refresh.name,
            ctx.patches["status"],
        )


async def fail(ctx: Context, refresh: Refresh, reason: str, message: str) -> None:
    """A step of its own that only fails the refresh."""
    t = Transition(refresh)
    t.fail(reason, message)
    await commit(ctx, t)


async def reread(refresh: Refresh) -> bool:
    """After a long step (a scrape): the refresh's metadata as the API has
    it now, so a Replace asked meanwhile is seen before a Job is made;
    False if it went (deleted, or made again under its name)."""
    current = await kube.get_refresh(refresh.namespace, refresh.name)
    if current is None or current["metadata"]["uid"] != refresh.uid:
        log.info("%s/%s went meanwhile; this step stops", refresh.namespace, refresh.name)
        return False
    refresh.body["metadata"] = current["metadata"]
    return True


def owner_reference(refresh: Refresh) -> dict[str, Any]:
    return {
        "apiVersion": refresh.body["apiVersion"],
        "kind": refresh.body["kind"],
        "name": refresh.name,
        "uid": refresh.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


async def stall(ctx: Context, refresh: Refresh, reason: str, message: str) -> Exception:
    """Say in condition Stalled (and once in an Event) why the refresh does
    not move while its step is retried; the error for the driver to retry
    on. The same cause again writes nothing; a write that fails (the API
    away too) is left to the next retry."""
    t = Transition(refresh)
    message = redact.one_line(message)
    was = true_condition(refresh.status, STALLED)
    t.condition(STALLED, True, reason, message)
    if was is None or was.get("reason") != reason:
        t.note(reason, message, warning=True)
    with contextlib.suppress(ApiError, OSError):
        await commit(ctx, t)
    return kopf_temporary(message)


def kopf_temporary(message: str) -> Exception:
    import kopf

    return kopf.TemporaryError(redact.one_line(message), delay=5)
