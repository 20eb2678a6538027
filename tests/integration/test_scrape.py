"""Fetching candidate lists: retries that honour Retry-After, headers from
a Secret, the size cap, and errors that name the cause. Against a real
HTTP server on loopback."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator

import pytest

from proxyrefresh.operator.scrape import SourceError, fetch


class Lists(http.server.BaseHTTPRequestHandler):
    hits: list[tuple[float, str, str | None]] = []

    def do_GET(self) -> None:
        Lists.hits.append((time.monotonic(), self.path, self.headers.get("Authorization")))
        if self.path == "/busy" and len([h for h in Lists.hits if h[1] == "/busy"]) == 1:
            self.send_response(429)
            self.send_header("Retry-After", "2")
            self.end_headers()
            return
        if self.path == "/private" and self.headers.get("Authorization") != "Bearer s3cret":
            self.send_response(401)
            self.end_headers()
            return
        if self.path == "/huge":
            body = b"1.2.3.4:80\n" * 10_000
        elif self.path in ("/busy", "/private"):
            body = b"1.2.3.4:8080\n"
        else:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Lists.hits = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.3", 0), Lists)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.3:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_retry_after_is_honoured(server: str) -> None:
    assert fetch(f"{server}/busy", {}, timeout=5, retries=3, max_bytes=1000) == "1.2.3.4:8080\n"
    (first, *_), (second, *_) = Lists.hits
    assert second - first >= 1.9  # waited what the server asked, not the short backoff


def test_headers_reach_the_source(server: str) -> None:
    with pytest.raises(SourceError, match="HTTP 401"):
        fetch(f"{server}/private", {}, timeout=5, retries=0, max_bytes=1000)
    text = fetch(f"{server}/private", {"Authorization": "Bearer s3cret"}, 5, 0, 1000)
    assert text == "1.2.3.4:8080\n"


def test_size_cap_and_errors_name_the_cause(server: str) -> None:
    with pytest.raises(SourceError, match="larger than the cap of 1000 bytes"):
        fetch(f"{server}/huge", {}, timeout=5, retries=0, max_bytes=1000)
    with pytest.raises(SourceError, match="HTTP 404"):
        fetch(f"{server}/nothing", {}, timeout=5, retries=0, max_bytes=1000)
    with pytest.raises(SourceError, match="unreachable: ConnectionError"):
        fetch("http://127.0.0.3:1/list", {}, timeout=2, retries=1, max_bytes=1000)
