"""A Square's pod: squares its chunk on the fan-out core's pod runtime.

With ``SQUARES_CRASH_ONCE`` (a file path), the first pod of index 0 exits 70
right after its chunk was completed and counted, so the Job retries an index
whose work is already done: the core must count it once. With
``SQUARES_SLOW`` each number takes that many seconds."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from proxyrefresh.fanout import EXIT_INTERNAL, EXIT_OK, PodRun, Processor, pod_main, run_pod
from tests.e2e.squares.kind import SQUARES


async def square(items: list[Any]) -> AsyncIterator[tuple[int, dict[str, Any], bool]]:
    slow = float(os.environ.get("SQUARES_SLOW") or 0)
    for pos, number in enumerate(items):
        await asyncio.sleep(slow)
        yield pos, {"n": number, "square": number * number}, True


async def prepare() -> Processor:
    return square


async def run(started: float) -> int:
    index = int(os.environ["JOB_COMPLETION_INDEX"])
    url = os.environ["SQUARES_REDIS_URL"]
    pod = PodRun(
        run_id=os.environ["SQUARES_RUN_ID"],
        index=index,
        redis_url=url,
        prefix=SQUARES.key_prefix,
        ttl=int(os.environ.get("SQUARES_KEY_TTL") or 3600),
    )
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
    sys.exit(pod_main(run))
