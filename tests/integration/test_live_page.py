"""The live page as an operations console (issue 32): trouble in colour,
grouped by pool, finished refreshes folded, labelled charts, rate and ETA,
a refresh's chunks and pods on click, and a first paint that needs no
event. Real Chromium, a real Redis, the page's real server; the API server
is a fixed listing (what it lists is all the page reads of it)."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from proxyrefresh.api import TIME_FORMAT
from proxyrefresh.constants import RUNS
from proxyrefresh.models import Anonymity
from tests.conftest import wait_for
from tests.harness import rotator as rot
from tests.harness import testbed as tb
from tests.harness.browser import ARTIFACTS, chromium
from tests.harness.testbed import LocalProxy, RedisServer

pytestmark = pytest.mark.integration
NS = "team"


def ago(seconds: float) -> str:
    when = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)
    return when.strftime(TIME_FORMAT)


def condition(kind: str, reason: str, message: str) -> dict[str, str]:
    return {"type": kind, "status": "True", "reason": reason, "message": message}


def refresh(name: str, created: float, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": NS, "uid": f"u-{name}",
                     "creationTimestamp": ago(created)},
        "spec": {"pool": "eu"},
        "status": status,
    }  # fmt: skip


REFRESHES = [
    refresh("old", 7200, phase="Complete", candidates=50, totalChunks=5, completedChunks=5,
            checked=50, live=20, usable=18, startedAt=ago(7200), completedAt=ago(7000)),
    refresh("broken", 600, phase="Failed", progress="-", message="no candidates",
            startedAt=ago(600), completedAt=ago(590), conditions=[condition(
                "Failed", "NoCandidates", "url http://127.0.0.3:1/none.txt: unreachable")]),
    refresh("stuck", 300, phase="Processing", candidates=100, totalChunks=10, completedChunks=2,
            checked=20, live=5, startedAt=ago(300), conditions=[condition(
                "Stalled", "RedisUnavailable", "Redis: cannot connect")]),
    refresh("busy", 60, phase="Processing", candidates=100, chunkSize=10, totalChunks=10,
            completedChunks=4, checked=40, live=12, startedAt=ago(60)),
]  # fmt: skip
POOLS = [
    {
        "metadata": {"name": "eu", "namespace": NS},
        "spec": {"minUsable": 50, "template": {}},
        "status": {
            "conditions": [condition("BelowMinimum", "BelowMinimum", "3 usable, minUsable 50")]
        },
    }
]
PODS = [
    {
        "metadata": {
            "name": f"busy-{i}-x",
            "annotations": {"batch.kubernetes.io/job-completion-index": str(i)},
        },
        "spec": {"nodeName": "127.0.0.1"},
        "status": {"phase": "Running", "containerStatuses": [{"restartCount": i % 2}]},
    }
    for i in (4, 5)
]


def listing(namespace: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return (REFRESHES, POOLS) if namespace == NS else ([], [])


def pods(namespace: str, name: str) -> list[dict[str, Any]]:
    return PODS if (namespace, name) == (NS, "busy") else []


@pytest.fixture
def page() -> Iterator[str]:
    """The ui's server in a thread, over a Redis holding the pool (entries
    only: no proxy is contacted) and the busy run's per-chunk counters."""
    from aiohttp import web
    from redis import Redis as SyncRedis
    from redis.asyncio import Redis

    from proxyrefresh.front.ui import Board, make_app

    testbed = tb.Testbed()
    redis = RedisServer(testbed)
    levels = (Anonymity.ELITE, Anonymity.ELITE, Anonymity.ANONYMOUS)
    entries = [
        LocalProxy(f"p{i}", f"http://127.0.0.{40 + i}:8080", a) for i, a in enumerate(levels)
    ]
    rot.fill(redis.url, NS, "eu", entries)
    keys = RUNS.keys("u-busy")
    with SyncRedis.from_url(redis.url) as sync:
        sync.sadd(keys.completed, 0, 1, 2, 3)
        sync.hset(keys.index_progress, mapping={"4:processed": 3, "4:succeeded": 1})
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ready, stop = threading.Event(), threading.Event()

    async def serve() -> None:
        client = Redis.from_url(redis.url, decode_responses=True)
        runner = web.AppRunner(make_app(Board(client, [NS], listing, pods)))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        ready.set()
        await asyncio.to_thread(stop.wait)
        await runner.cleanup()
        await client.aclose()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(30), "the page's server did not start"
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        stop.set()
        thread.join(timeout=30)
        redis.stop()
        testbed.close()


def text_of(driver: Any, selector: str) -> str:
    return str(driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText : null;", selector
    ))  # fmt: skip


def test_the_page_shows_trouble_first_and_drills_down(page: str) -> None:
    html = requests.get(page, timeout=10).text
    assert '"name":"broken"' in html  # the state is in the page itself
    driver = chromium()
    try:
        driver.get(page)
        # First paint: the board is there before any event arrives.
        failed = text_of(driver, '.refresh.Failed[data-name="broken"]')
        assert "NoCandidates: url http://127.0.0.3:1/none.txt: unreachable" in failed
        assert "0%" not in failed
        assert "chunks" not in failed
        stuck = text_of(driver, '.refresh.stalled[data-name="stuck"]')
        assert "Stalled: RedisUnavailable" in stuck
        assert "Redis: cannot connect" in stuck
        pool = text_of(driver, '.pool.below[data-pool="team/eu"]')
        assert "minUsable 50" in pool
        assert "BelowMinimum" in pool
        assert "elite" in text_of(driver, '.pool[data-pool="team/eu"] .legend')
        counts = driver.execute_script(
            "return document.querySelectorAll('svg.latency text.count').length"
        )
        assert counts == 8
        # Pools first, each with its refreshes; finished ones folded away.
        first = "return document.querySelector('section[data-group=\"team/eu\"]').firstElementChild"
        assert "pool" in driver.execute_script(first + ".className")
        assert driver.execute_script(
            "const d = document.querySelector('details.finished');"
            "return d && !d.open && !!d.querySelector('.refresh.Complete[data-name=\"old\"]');"
        )
        busy = text_of(driver, '.refresh[data-name="busy"]')
        assert "40%" in busy
        assert "ETA" in busy
        assert "/s" in busy
        wait_for(lambda: text_of(driver, "#status") == "live", 10, "the page's stream")
        # Drill down: the busy refresh's chunks and pods.
        driver.find_element("css selector", '.refresh[data-name="busy"] .name').click()
        wait_for(
            lambda: (
                driver.execute_script("return document.querySelectorAll('.detail .chunk').length")
                == 10
            ),
            10,
            "the busy refresh's chunks",
        )
        states = driver.execute_script(
            "return [...document.querySelectorAll('.detail .chunk')].map(c => c.classList[1])"
        )
        assert states == ["done"] * 4 + ["running"] + ["waiting"] * 5
        assert "busy-4-x" in text_of(driver, ".detail table.pods")
        assert "null" not in text_of(driver, ".detail")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "live-page-trouble.png"
        driver.save_screenshot(str(shot))
        print(f"\n  screenshot: {shot}")
        assert shot.stat().st_size > 10_000
        # The filter keeps what matches.
        driver.find_element("css selector", "#filter").send_keys("stuck")
        visible = "return [...document.querySelectorAll('.refresh:not(.hidden)')]"
        assert driver.execute_script(visible + ".map(c => c.dataset.name)") == ["stuck"]
    finally:
        driver.quit()


async def test_the_page_is_ready_only_while_its_redis_user_is() -> None:
    """A Redis restarted without its ACLs forgets the page's viewer user:
    the page then says so on /readyz (503, naming Redis) and its pod leaves
    the Service; the user made again, it is ready again by itself."""
    from aiohttp.test_utils import TestClient, TestServer
    from redis.asyncio import Redis

    from proxyrefresh.front.ui import Board, make_app
    from proxyrefresh.pool_keys import viewer_rules

    testbed = tb.Testbed()
    server = RedisServer(testbed)
    admin = Redis.from_url(server.url, decode_responses=True)
    viewer_url = server.url.replace("redis://", "redis://viewer:viewer-secret@", 1)
    viewer = Redis.from_url(viewer_url, decode_responses=True)
    try:
        rules = ["ACL", "SETUSER", "viewer", *viewer_rules("viewer-secret")]
        await admin.execute_command(*rules)  # type: ignore[no-untyped-call]
        async with TestClient(TestServer(make_app(Board(viewer, [NS], listing, pods)))) as page:
            ready = await page.get("/readyz")
            assert (ready.status, await ready.text()) == (200, "ready")
            await admin.acl_deluser("viewer")  # Redis drops its connections with it
            gone = await page.get("/readyz")
            assert gone.status == 503
            assert (await gone.text()).startswith("Redis: ")
            assert (await page.get("/healthz")).status == 200  # alive all the same
            await admin.execute_command(*rules)  # type: ignore[no-untyped-call]
            assert (await page.get("/readyz")).status == 200
    finally:
        await viewer.aclose()
        await admin.aclose()
        server.stop()
        testbed.close()
