"""The rotator's feed outlives its API server: a dropped or refused watch
is watched again, and the file follows the ConfigMap once it answers."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest
from kubernetes.config import kube_config

from proxyrefresh.worker import rotator_feed
from tests.harness.fakeapi import Answer, fake_api, status_body

CONFIG_MAP = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "pool", "namespace": "proxies", "resourceVersion": "7"},
    "data": {"live_proxies.txt": "http://127.0.0.11:1\n"},
}
DROPS = 6  # more than urllib3's own retries of one call


@pytest.mark.timeout(60)
def test_the_feed_watches_again_after_the_api_server_drops_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []

    def answers(method: str, path: str) -> Answer:
        seen.append(path)
        if len(seen) <= DROPS:
            return None  # an API server restarting
        if len(seen) == DROPS + 1:
            return 403, status_body(403, "Forbidden", "configmaps is forbidden")  # RBAC lagging
        return 200, {"type": "ADDED", "object": CONFIG_MAP}

    target = tmp_path / "proxies.txt"
    caplog.set_level(logging.WARNING, "proxyrefresh.rotator-feed")
    monkeypatch.setattr(rotator_feed, "RETRY_SECONDS", 0.1)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with fake_api(answers) as api:
        # Read from $KUBECONFIG when kubernetes is imported: too late to set it.
        config = str(api.kubeconfig(tmp_path / "kubeconfig"))
        monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", config)
        feeder = threading.Thread(
            target=rotator_feed.feed, args=("proxies", "pool", "live_proxies.txt", target, True)
        )
        feeder.start()
        feeder.join(timeout=30)
        assert not feeder.is_alive(), "the feed never wrote the ConfigMap's list"
    assert target.read_text() == "http://127.0.0.11:1\n"
    assert len(seen) == DROPS + 2
    assert "watch=true" in seen[-1]
    assert "fieldSelector=metadata.name%3Dpool" in seen[-1]
    warnings = [r.getMessage() for r in caplog.records]
    assert any("proxies/pool: API server unreachable" in w for w in warnings), warnings
    assert any("proxies/pool: Forbidden; again in" in w for w in warnings), warnings
