"""The one polling wait of the dev tools: tests, the harness and the benches
wait on a condition with a deadline through it, never sleep-and-hope."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError, TimeoutError):
    """A condition did not hold in time (or what it waited on died); the
    message names the condition and carries what the caller knows of why."""


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float,
    what: str,
    *,
    gone: Callable[[], str | None] | None = None,
    log: Path | None = None,
    interval: float = 0.05,
) -> T:
    """Poll ``predicate`` until it returns something truthy and return that.
    ``gone`` says why waiting is pointless (a process that died, with its
    log): then it fails at once instead of at the deadline. The end of
    ``log``, if given, goes into the failure."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        why = gone() if gone is not None else None
        if why is None and time.monotonic() > deadline:
            why = f"not ready after {timeout}s"
        if why is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise WaitTimeout(f"timed out waiting for {what}: {why}\n{tail}".rstrip())
        time.sleep(interval)
