"""Shared fixtures: real local servers, started once per session.

A missing server program fails the test with what to install; nothing is
skipped.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from redis.asyncio import Redis as AsyncRedis

from tests.harness.testbed import (
    LocalProxy,
    MissingTool,
    RedisServer,
    Testbed,
    standard_set,
)
from tests.harness.waiting import wait_until

T = TypeVar("T")


@dataclass
class Bed:
    testbed: Testbed
    judge: str
    proxies: list[LocalProxy]

    def by_name(self, prefix: str) -> LocalProxy:
        (found,) = [p for p in self.proxies if p.name.startswith(prefix)]
        return found


@pytest.fixture(scope="session")
def bed() -> Iterator[Bed]:
    try:
        with Testbed() as testbed:
            yield Bed(testbed, testbed.judge(), standard_set(testbed))
    except MissingTool as exc:
        pytest.fail(str(exc), pytrace=False)


def run_cli(
    *args: str, stdin: str | None = None, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real console entry point, as a user would (``env``: added to ours)."""
    return subprocess.run(
        [sys.executable, "-m", "proxyrefresh.front.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def write_list(tmp_path: Path):  # type: ignore[no-untyped-def]
    def write(*lines: str) -> str:
        path = tmp_path / "list.txt"
        path.write_text("\n".join(lines) + "\n")
        return str(path)

    return write


@pytest.fixture(scope="session")
def redis_server(bed: Bed) -> RedisServer:
    """One real redis-server for the session (tests use distinct run ids)."""
    try:
        return RedisServer(bed.testbed)
    except MissingTool as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[AsyncRedis]:
    """An asyncio client of the session's redis-server, closed after the test."""
    client = AsyncRedis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


def wait_for(
    predicate: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05
) -> T:
    """Poll ``predicate`` until it returns something truthy, or fail naming
    ``what`` after ``timeout`` seconds."""
    return wait_until(predicate, timeout, what, interval=interval)


async def async_wait_for(
    predicate: Callable[[], Awaitable[T | None]], within: float, what: str
) -> T:
    deadline = time.monotonic() + within
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.05)
