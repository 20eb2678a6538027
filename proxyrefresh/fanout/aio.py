"""Run a coroutine on the fastest event loop at hand.

uvloop (libuv) runs the same asyncio code with a fraction of the standard
loop's overhead per callback, which is most of what a pod spends when it
holds hundreds of connections; where it is not installed (or not built for
the platform) the standard loop does the same work, slower.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
