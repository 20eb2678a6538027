"""Seeing a refresh: the operator's /metrics against the status, ``proxyrefresh
watch`` on a terminal and piped, and the live page in headless Chromium."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis as SyncRedis

from proxyrefresh.pool_keys import viewer_rules
from tests.conftest import wait_for
from tests.e2e.conftest import World, phase_in, refresh, wait_status
from tests.e2e.test_operator import assert_exact, small
from tests.harness.browser import ARTIFACTS, chromium
from tests.harness.kubectl import Kubectl
from tests.harness.testbed import ROOT, free_port, start_logged, wait_for_port

pytestmark = pytest.mark.e2e


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_metrics_match_the_status_during_and_after_a_refresh(
    world: World, kubectl: Kubectl
) -> None:
    url = world.operator.metrics_url
    ns = kubectl.namespace
    cands = small(world, kubectl, "measured", holes=30, chunkSize=10)
    processing = wait_status(kubectl, "measured", phase_in("Processing"), 60, "Processing")
    pool = {"namespace": ns, "pool": "default"}

    def in_phase(phase: str) -> dict[Any, float] | None:
        # The metrics follow each status write as soon as the API server has
        # answered it, a moment after a reader may already see the status.
        samples = scrape(url)
        return samples if value(samples, "proxyrefresh_refreshes", **pool, phase=phase) else None

    during = wait_for(lambda: in_phase("Processing"), 10, "the metrics to say Processing")
    assert value(during, "proxyrefresh_refreshes", **pool, phase="Processing") == 1
    assert (
        value(during, "proxyrefresh_refresh_candidates", namespace=ns, pool="default")
        == (processing["candidates"])
    )
    status = wait_status(kubectl, "measured", phase_in("Complete", "Failed"), 120, "the end")
    assert_exact(status, cands)
    after = wait_for(lambda: in_phase("Complete"), 10, "the metrics to say Complete")
    assert value(after, "proxyrefresh_refreshes", **pool, phase="Processing") == 0
    assert value(after, "proxyrefresh_refreshes", **pool, phase="Complete") == 1
    fields = {
        "candidates": "candidates",
        "checked": "checked",
        "live": "live",
        "usable": "usable",
        "totalChunks": "chunks",
        "completedChunks": "chunks_completed",
    }
    for field, metric in fields.items():
        assert value(after, f"proxyrefresh_refresh_{metric}", **pool) == status[field], metric
    assert (
        value(after, "proxyrefresh_refresh_duration_seconds_count", **pool, outcome="complete") == 1
    )
    assert (value(after, "proxyrefresh_status_patches_total", kind="refresh") or 0) >= 3
    reconciles = value(after, "proxyrefresh_reconcile_duration_seconds_count", kind="refresh")
    assert reconciles is not None
    assert reconciles >= 3
    assert value(after, "proxyrefresh_pool_size", **pool) == status["poolSize"]


def watch_cmd(world: World, kubectl: Kubectl, name: str) -> list[str]:
    return [sys.executable, "-m", "proxyrefresh.front.cli", "watch", name, "-n", kubectl.namespace]


def test_watch_piped_prints_lines_and_exits_0_on_complete(world: World, kubectl: Kubectl) -> None:
    cands = small(world, kubectl, "watched", holes=30, chunkSize=10)
    result = subprocess.run(
        watch_cmd(world, kubectl, "watched"),
        capture_output=True,
        text=True,
        timeout=180,
        env=world.operator.env,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "\x1b[" not in result.stdout  # no bar, no colours when piped
    assert lines[-1].startswith(f"Complete  chunks {len(cands.urls) // 10}/")
    assert f"checked {len(cands.urls)}/{len(cands.urls)}" in lines[-1]
    progress = [int(x.split("checked ")[1].split("/")[0]) for x in lines if "checked " in x]
    assert len(set(progress)) >= 3, lines  # it moved while the pods worked
    assert progress == sorted(progress)


def test_watch_draws_a_bar_on_a_terminal_and_exits_1_on_failed(
    world: World, kubectl: Kubectl
) -> None:
    small(world, kubectl, "drawn", holes=30, chunkSize=10)
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        watch_cmd(world, kubectl, "drawn"),
        stdout=slave,
        stderr=slave,
        # No Redis for this one: the status alone drives the bar.
        env={
            **{k: v for k, v in world.operator.env.items() if k != "PROXYREFRESH_REDIS_URL"},
            "COLUMNS": "120",
            "TERM": "xterm",
        },
    )
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 180
    while proc.poll() is None and time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                seen += os.read(master, 65536)
            except OSError:
                break
    proc.wait(timeout=10)
    os.close(master)
    text = seen.decode(errors="replace")
    assert proc.returncode == 0, text[-2000:]
    assert "━" in text  # rich's bar
    assert "100%" in text
    assert "Complete" in text
    # Failed: a source that is not there.
    kubectl.apply(refresh("broken", [{"url": "http://127.0.0.3:1/none.txt"}], world.judge))
    failed = subprocess.run(
        watch_cmd(world, kubectl, "broken"), capture_output=True, text=True, timeout=120,
        env=world.operator.env,
    )  # fmt: skip
    assert failed.returncode == 1, (failed.stdout, failed.stderr)
    assert "NoCandidates" in failed.stderr
    missing = subprocess.run(
        watch_cmd(world, kubectl, "nobody"), capture_output=True, text=True, timeout=60,
        env=world.operator.env,
    )  # fmt: skip
    assert missing.returncode == 4, missing.stderr
    assert "not found" in missing.stderr


@pytest.fixture
def ui(world: World, kubectl: Kubectl) -> Any:
    port = free_port("127.0.0.1")
    log = world.cluster.logs / f"ui-{kubectl.namespace}.log"
    # The page's process runs as the read-only user docs/security.md gives.
    user = f"ui-{kubectl.namespace}"
    with SyncRedis.from_url(world.redis.url) as admin:
        admin.execute_command("ACL", "SETUSER", user, *viewer_rules("viewer-secret"))
    url = world.redis.url.replace("redis://", f"redis://{user}:viewer-secret@", 1)
    proc = start_logged(
        [sys.executable, "-m", "proxyrefresh.front.cli", "ui", "--listen", f"127.0.0.1:{port}",
         "-n", kubectl.namespace],
        log,
        env={**world.operator.env, "PROXYREFRESH_REDIS_URL": url},
        cwd=ROOT,
    )  # fmt: skip
    wait_for_port("127.0.0.1", port, proc=proc, log=log)
    yield f"http://127.0.0.1:{port}/"
    proc.terminate()
    proc.wait(timeout=10)


def test_the_live_page_follows_a_refresh(world: World, kubectl: Kubectl, ui: str) -> None:
    driver = chromium()
    try:
        driver.get(ui)
        wait_for(
            lambda: (
                driver.execute_script("return document.getElementById('status').textContent")
                == "live"
            ),
            30,
            "the page's stream",
        )
        cands = small(world, kubectl, "shown", holes=30, chunkSize=10)
        shown: list[int] = []

        def percent() -> int | None:
            found = driver.execute_script(
                "const e = document.querySelector('.refresh[data-name=\"shown\"]');"
                "return e ? Number(e.dataset.percent) : null;"
            )
            if found is not None and (not shown or shown[-1] != found):
                shown.append(int(found))
            return found == 100 or None

        wait_for(percent, 180, "the page to show the refresh at 100%", interval=0.1)
        status = wait_status(kubectl, "shown", phase_in("Complete"), 30, "Complete")
        assert_exact(status, cands)
        assert len(set(shown)) >= 3, shown  # it moved
        assert shown == sorted(shown), shown  # never backwards
        delays = driver.execute_script("return window.proxyrefresh.delays")
        assert delays, "no run event reached the page"
        print(f"\n  Redis change to page: median {sorted(delays)[len(delays) // 2]:.3f}s, "
              f"max {max(delays):.3f}s over {len(delays)} events")  # fmt: skip
        assert max(delays) < 1.0, sorted(delays)
        wait_for(
            lambda: driver.execute_script(
                "return document.querySelector('.refresh.Complete[data-name=\"shown\"]')"
            ),
            10,
            "the page to show Complete",
        )
        wait_for(
            lambda: driver.execute_script(
                "const p = document.querySelector('.pool[data-pool$=\"/default\"]');"
                "return p && Number(p.dataset.size) > 0;"
            ),
            30,
            "the pool's card",
        )
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "live-page.png"
        driver.save_screenshot(str(shot))
        print(f"  screenshot: {shot}")
        assert shot.stat().st_size > 10_000
    finally:
        driver.quit()
