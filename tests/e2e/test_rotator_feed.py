"""The rotator's file follows the pool's ConfigMap: in place, never empty."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.harness.kubectl import Kubectl

pytestmark = pytest.mark.e2e


def test_feed_writes_in_place_and_never_empties(kubectl: Kubectl, tmp_path: Path) -> None:
    target = tmp_path / "proxies.txt"
    log = tmp_path / "feed.log"
    kubectl(
        "create",
        "configmap",
        "pool-proxies",
        "--from-literal=live_proxies.txt=http://127.0.0.11:1\n",
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "proxyrefresh.front.cli",
            "rotator-feed",
            "--configmap",
            "pool-proxies",
            "-n",
            kubectl.namespace,
            "--file",
            str(target),
        ],
        env={**os.environ, "KUBECONFIG": str(kubectl.kubeconfig)},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(
            lambda: target.exists() and target.read_text() == "http://127.0.0.11:1\n",
            30,
            "the first pool in the file",
        )
        inode = target.stat().st_ino
        patch = '{"data": {"live_proxies.txt": "socks5://127.0.0.15:2\\nhttp://127.0.0.13:3\\n"}}'
        kubectl("patch", "configmap", "pool-proxies", "--type=merge", "-p", patch)
        wait_for(lambda: target.read_text().startswith("socks5://"), 30, "the new pool")
        assert target.read_text() == "socks5://127.0.0.15:2\nhttp://127.0.0.13:3\n"
        assert target.stat().st_ino == inode  # rewritten in place: mubeng -w sees it
        kubectl(
            "patch",
            "configmap",
            "pool-proxies",
            "--type=merge",
            "-p",
            '{"data": {"live_proxies.txt": ""}}',
        )
        wait_for(lambda: "keeping the last list" in log.read_text(), 30, "the empty pool")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert target.read_text() == "socks5://127.0.0.15:2\nhttp://127.0.0.13:3\n"
