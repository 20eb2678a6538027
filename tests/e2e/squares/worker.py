"""A Square's pod: squares its chunk on the fan-out core's pod runtime.

With ``SQUARES_CRASH_ONCE`` (a file path), the first pod of index 0 exits 70
right after its chunk was completed and counted, so the Job retries an index
whose work is already done: the core must count it once."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from proxyrefresh.fanout.exits import EXIT_INTERNAL, EXIT_OK
from proxyrefresh.fanout.pod import PodRun, main, run_pod
from proxyrefresh.fanout.runner import Processor
from tests.e2e.squares.kind import PREFIX


async def square(items: list[Any]) -> AsyncIterator[tuple[int, dict[str, Any], bool]]:
    for pos, number in enumerate(items):
        yield pos, {"n": number, "square": number * number}, True


async def prepare() -> Processor:
    return square


async def run(started: float) -> int:
    index = int(os.environ["JOB_COMPLETION_INDEX"])
    url = os.environ["SQUARES_REDIS_URL"]
    pod = PodRun(run_id=os.environ["SQUARES_RUN_ID"], index=index, redis_url=url, prefix=PREFIX)
    code = await run_pod(pod, Redis.from_url(url, decode_responses=True), prepare, started)
    return crash_once(code, index)


def crash_once(code: int, index: int) -> int:
    marker = Path(os.environ.get("SQUARES_CRASH_ONCE") or "/nonexistent/x")
    if code == EXIT_OK and index == 0 and marker.parent.is_dir() and not marker.exists():
        marker.touch()
        print("squares: crashing after completing chunk 0, once", file=sys.stderr)
        return EXIT_INTERNAL
    return code


if __name__ == "__main__":
    sys.exit(main(run))
