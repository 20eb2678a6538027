"""One refresh, one step at a time, from whatever the status and Redis say.

The driver (operator/driver.py) calls :func:`run_step` when the run's
events or its heartbeat wake the refresh. A step reads the world (status,
Redis, the Job), makes the one transition its phase calls for, builds the
status in memory and writes it once (operator/transition.py); a step that
can move on at once does (Pending to Scraping to Dispatched, Merging to
Complete). So an operator killed at any point resumes where it was: the
Job's name is derived from the refresh (never a second Job) and the pool
remembers which refreshes it merged (never a second merge).

    Pending ──► Scraping ──► Dispatched ──► Processing ──► Merging ──► Complete
       │ (Forbid: waits)        │ Job Failed / state lost ──────────► Failed

Each phase has its room: operator/phase_pending.py, phase_scraping.py,
phase_processing.py (Dispatched and Processing), phase_merging.py; what
they share is operator/context.py (the Context, Refused, Unavailable).
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError

from proxyrefresh.api import STALLED, Phase, problems, true_condition
from proxyrefresh.operator import kube
from proxyrefresh.operator.apiclient import ApiError
from proxyrefresh.operator.context import Context, Refused, Unavailable
from proxyrefresh.operator.phase_merging import finish
from proxyrefresh.operator.phase_pending import admit, stop
from proxyrefresh.operator.phase_processing import follow
from proxyrefresh.operator.phase_scraping import start
from proxyrefresh.operator.transition import Refresh, Transition, commit, fail, stall

log = logging.getLogger("proxyrefresh.operator")


# Phases a step may move on from at once, in the same handler call.
MOVES_ON = {Phase.PENDING.value, Phase.SCRAPING.value, Phase.MERGING.value}


async def run_step(ctx: Context, refresh: Refresh) -> bool:
    """One wake: the one transition the refresh's phase calls for, written
    once. True when the refresh may move on at once (Pending to Scraping to
    Dispatched, Merging to Complete): the driver wakes it again without
    waiting. The caller keeps ``refresh``: its status is kept up to date
    with every write, so a caller that steps again needs no re-read."""
    try:
        refresh.spec  # noqa: B018 - validate before anything else
    except ValidationError as exc:
        await fail(ctx, refresh, "InvalidSpec", problems(exc))
        return False
    before = refresh.state.phase
    t = Transition(refresh)
    try:
        await advance(ctx, t)
    except Refused as exc:
        t.fail(exc.reason, str(exc))
    except ApiError as exc:
        if not kube.permanent(exc):
            why = f"Kubernetes API: {kube.describe(exc)}"
            raise await stall(ctx, refresh, "ApiUnavailable", why) from None
        # A permanent answer: retrying would fail the same way, forever.
        t.fail("ApiError", f"the Kubernetes API refused: {kube.describe(exc)}")
    except Unavailable as exc:
        raise await stall(ctx, refresh, exc.reason, str(exc)) from exc.__cause__
    except Exception as exc:
        # Not the refresh's fault, and its text may quote what a source
        # held: the status names the kind of failure, the log the rest.
        step = before or "first"
        why = f"the {step} step failed ({type(exc).__name__}): see the operator's log"
        await stall(ctx, refresh, "StepFailed", why)
        raise
    if true_condition(t.status, STALLED):
        t.condition(STALLED, False, "Resumed", "")
    await commit(ctx, t)
    after = refresh.state.phase
    return t.again or (after != before and after in MOVES_ON)


async def advance(ctx: Context, t: Transition) -> None:
    """The one transition the refresh's phase calls for."""
    refresh = t.refresh
    phase = refresh.state.phase
    if refresh.replaced_by:
        stop(ctx, t)
    elif not phase:  # first sight: PHASE is never blank
        t.set(phase=Phase.PENDING.value, progress="pending")
    elif phase == Phase.PENDING:
        await admit(ctx, t)
    elif phase == Phase.SCRAPING:
        await start(ctx, t)
    elif phase in (Phase.DISPATCHED, Phase.PROCESSING):
        await follow(ctx, t)
    elif phase == Phase.MERGING:
        await finish(ctx, t)


async def cleanup(ctx: Context, body: dict[str, Any]) -> None:
    """On deletion: the Redis keys go now; the Job goes with it (owner reference),
    but is deleted here too so its pods stop at once."""
    refresh = Refresh(body)
    await kube.delete_job(refresh.namespace, refresh.job_name)
    deleted = await ctx.run(refresh.uid).cleanup()
    ctx.metrics.refresh_gone(refresh.uid)
    log.info("deleted %s/%s: %d Redis keys removed", refresh.namespace, refresh.name, deleted)
