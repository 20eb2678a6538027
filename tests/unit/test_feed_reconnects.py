"""The rotator's feed outlives its API server: a dropped or refused watch
is watched again, and the file follows the ConfigMap once it answers."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from kubernetes.config import kube_config

from proxyrefresh.worker import rotator_feed

CONFIG_MAP = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "pool", "namespace": "proxies", "resourceVersion": "7"},
    "data": {"live_proxies.txt": "http://127.0.0.11:1\n"},
}


class FlakyApi(BaseHTTPRequestHandler):
    """Drops the first DROPS connections without an answer (an API server
    restarting), then answers the watch with the ConfigMap."""

    DROPS = 6
    served: list[str] = []

    def do_GET(self) -> None:
        self.served.append(self.path)
        if len(self.served) <= self.DROPS:
            self.close_connection = True
            self.connection.close()
            return
        line = json.dumps({"type": "ADDED", "object": CONFIG_MAP}).encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(line)))
        self.end_headers()
        self.wfile.write(line)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.timeout(60)
def test_the_feed_watches_again_after_the_api_server_drops_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FlakyApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "c", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}
                ],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    # Read from $KUBECONFIG when kubernetes is imported: too late to set it.
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr(rotator_feed, "RETRY_SECONDS", 0.1)
    target = tmp_path / "proxies.txt"
    caplog.set_level(logging.WARNING, "proxyrefresh.rotator-feed")
    try:
        feeder = threading.Thread(
            target=rotator_feed.feed, args=("proxies", "pool", "live_proxies.txt", target, True)
        )
        feeder.start()
        feeder.join(timeout=30)
        assert not feeder.is_alive(), "the feed never wrote the ConfigMap's list"
    finally:
        server.shutdown()
        server.server_close()
    assert target.read_text() == "http://127.0.0.11:1\n"
    assert len(FlakyApi.served) > FlakyApi.DROPS
    assert "watch=true" in FlakyApi.served[-1]
    assert "fieldSelector=metadata.name%3Dpool" in FlakyApi.served[-1]
    warnings = [r.getMessage() for r in caplog.records]
    assert any("proxies/pool: API server unreachable" in w for w in warnings), warnings
