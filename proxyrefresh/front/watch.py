"""``proxyrefresh watch``: one refresh, live, until it ends.

Progress comes from the run's Redis events when the watcher may read Redis
(``PROXYREFRESH_REDIS_URL``): the pods publish every change there, so the
bar moves as the pods work. The resource's status (read every second, and
the only source without Redis) says the phase, the message and the end:
Complete only once the pool is written. On a terminal a rich bar is drawn
(chunks, checked, live, rate, ETA); piped, one plain line per change.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TextIO

from proxyrefresh.api import STALLED, Phase, finished, true_condition

if TYPE_CHECKING:
    from proxyrefresh.settings import RedisSettings


@dataclass(frozen=True)
class View:
    """What is shown of a refresh at one moment."""

    phase: str = Phase.PENDING.value
    message: str = ""
    candidates: int = 0
    total_chunks: int = 0
    completed_chunks: int = 0
    checked: int = 0
    live: int = 0

    @property
    def done(self) -> bool:
        return finished(self.phase)


def stalled(status: dict[str, Any]) -> str | None:
    """Why the refresh does not move (condition Stalled), if it does not."""
    cond = true_condition(status, STALLED)
    return f"stalled, {cond.get('reason')}: {cond.get('message')}" if cond else None


def from_status(status: dict[str, Any], before: View | None = None) -> View:
    """The status's view; counts never go back (Redis may be ahead of it)."""
    b = before or View()
    return View(
        phase=str(status.get("phase") or Phase.PENDING.value),
        message=stalled(status) or str(status.get("message") or ""),
        candidates=max(b.candidates, int(status.get("candidates") or 0)),
        total_chunks=max(b.total_chunks, int(status.get("totalChunks") or 0)),
        completed_chunks=max(b.completed_chunks, int(status.get("completedChunks") or 0)),
        checked=max(b.checked, int(status.get("checked") or 0)),
        live=max(b.live, int(status.get("live") or 0)),
    )


def from_event(view: View, snapshot: dict[str, Any]) -> View:
    """A run event (the pods' counters: the fan-out core's neutral names)."""
    return replace(
        view,
        total_chunks=max(view.total_chunks, int(snapshot.get("total_chunks") or 0)),
        completed_chunks=max(view.completed_chunks, int(snapshot.get("completed_chunks") or 0)),
        checked=max(view.checked, int(snapshot.get("processed") or 0)),
        live=max(view.live, int(snapshot.get("succeeded") or 0)),
    )


@dataclass
class Rate:
    """Checked per second since the first check seen, and the time left."""

    first: tuple[float, int] | None = None

    def update(self, now: float, checked: int) -> float | None:
        if self.first is None:
            if checked:
                self.first = (now, checked)
            return None
        elapsed = now - self.first[0]
        return (checked - self.first[1]) / elapsed if elapsed > 0 else None

    def eta(self, rate: float | None, view: View) -> float | None:
        if not rate or not view.candidates:
            return None
        return max(0.0, (view.candidates - view.checked) / rate)


def line(view: View, rate: float | None, eta: float | None) -> str:
    """One plain line: what the piped output and logs get."""
    parts = [view.phase]
    if view.total_chunks:
        parts.append(f"chunks {view.completed_chunks}/{view.total_chunks}")
    if view.candidates or view.checked:
        parts.append(f"checked {view.checked}/{view.candidates or '?'}")
        parts.append(f"live {view.live}")
    if rate:
        parts.append(f"{rate:,.0f}/s")
    if eta is not None and not view.done:
        parts.append(f"ETA {eta:.0f}s")
    if view.message:
        parts.append(f"- {view.message}")
    return "  ".join(parts)


class Output:
    """Plain lines (piped) or a rich bar (a terminal)."""

    def __init__(self, name: str, stream: TextIO, bar: bool) -> None:
        self.name, self.stream, self.bar = name, stream, bar
        self.last = ""
        self.progress: Any = None
        self.task: Any = None
        if bar:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("[bold]{task.fields[name]}[/] {task.fields[phase]}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TextColumn("{task.fields[detail]}"),
                TimeRemainingColumn(),
                console=Console(file=stream, force_terminal=True),
                transient=False,
            )
            self.progress.start()
            self.task = self.progress.add_task(
                "", total=None, name=name, phase="Pending", detail=""
            )

    def show(self, view: View, rate: float | None, eta: float | None) -> None:
        if self.bar:
            total = view.candidates or None
            detail = f"chunks {view.completed_chunks}/{view.total_chunks}  live {view.live}"
            if rate:
                detail += f"  {rate:,.0f}/s"
            done = view.candidates if view.phase == Phase.COMPLETE.value else view.checked
            self.progress.update(
                self.task, total=total, completed=done, phase=view.phase, detail=detail
            )
            return
        text = line(view, rate, eta)
        if text != self.last:
            self.stream.write(text + "\n")
            self.stream.flush()
            self.last = text

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


class Events:
    """The run's Redis events channel, when Redis may be read."""

    def __init__(self, redis: RedisSettings | None, channel: str) -> None:
        self.pubsub: Any = None  # None: no Redis to read (the status alone drives the view)
        self.sharded = False
        if redis is None:
            return
        from redis.exceptions import RedisError

        from proxyrefresh.redis_topology import publish_verb

        try:
            client = redis.sync_client(timeout=3)
            self.sharded = publish_verb(client) == "SPUBLISH"  # a cluster's, as the pods publish
            self.pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call, unused-ignore]
            (self.pubsub.ssubscribe if self.sharded else self.pubsub.subscribe)(channel)
        except RedisError:
            self.pubsub = None

    def next(self, timeout: float) -> dict[str, Any] | None:
        """The next event within ``timeout`` seconds, or None."""
        if self.pubsub is None:
            time.sleep(timeout)  # nothing to wait on but the next status read
            return None
        from redis.exceptions import RedisError

        try:
            if self.sharded:
                message = self.pubsub.get_sharded_message(
                    ignore_subscribe_messages=True, timeout=timeout
                )
            else:
                message = self.pubsub.get_message(timeout=timeout)
        except RedisError:
            self.pubsub = None  # the status still says it all
            return None
        if not message or message.get("type") not in ("message", "smessage"):
            return None
        try:
            data = json.loads(message["data"])
        except (TypeError, ValueError):
            return None
        return data if isinstance(data, dict) else None


def follow(
    name: str,
    read_status: Callable[[], dict[str, Any]],
    events: Events,
    out: Output,
    status_every: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
) -> View:
    """Show the refresh until it ends; returns its last view."""
    view = View()
    rate = Rate()
    last_read = -status_every
    try:
        while True:
            now = clock()
            if now - last_read >= status_every:
                view = from_status(read_status(), view)
                last_read = now
            r = rate.update(now, view.checked)
            out.show(view, r, rate.eta(r, view))
            if view.done:
                return view
            event = events.next(timeout=max(0.05, status_every - (clock() - last_read)))
            if event is not None:
                view = from_event(view, event)
    finally:
        out.close()


def failure(status: dict[str, Any]) -> str:
    cond = true_condition(status, "Failed")
    if cond is None:
        return str(status.get("message") or "failed")
    return f"{cond.get('reason')}: {cond.get('message')}"
