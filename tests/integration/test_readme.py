"""The README's Python snippet runs as written (issue 32): the first lines
a scraping team writes, extracted from the README and run against a real
Redis holding a pool, through a proxy on loopback that answers every
request itself (nothing leaves the machine, example.org included)."""

from __future__ import annotations

import http.server
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Bed
from tests.harness import rotator as rot
from tests.harness.testbed import LocalProxy, RedisServer

pytestmark = pytest.mark.integration
README = Path(__file__).resolve().parents[2] / "README.md"


def python_snippet() -> str:
    """The README's indented code block that leases from a pool."""
    blocks = re.findall(r"(?:^(?: {4}.*)?\n)+", README.read_text(), flags=re.M)
    (block,) = [b for b in blocks if "pool.lease(" in b]
    return "\n".join(line[4:] for line in block.splitlines())


class Answering(http.server.BaseHTTPRequestHandler):
    """A forward proxy that answers every request itself, remembering the target."""

    seen: list[str] = []

    def do_GET(self) -> None:
        Answering.seen.append(self.path)
        body = b"answered on loopback\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def answering_proxy() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answering)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_readme_lease_snippet_runs_as_written(bed: Bed, answering_proxy: str) -> None:
    code = python_snippet()
    assert 'pool.lease(min_anonymity="elite"' in code
    redis = RedisServer(bed.testbed)
    try:
        proxy = LocalProxy("answering", answering_proxy, expect=None)
        rot.fill(redis.url, "default", "default", [proxy])
        ran = subprocess.run(
            [sys.executable, "-c", code + "\nprint(answer.status_code, answer.text.strip())"],
            capture_output=True,
            text=True,
            timeout=60,
            env={"PROXYREFRESH_REDIS_URL": redis.url, "PATH": "/usr/bin:/bin", "NO_PROXY": ""},
        )
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.strip() == "200 answered on loopback"
        assert Answering.seen == ["http://example.org/"]
        (entry,) = rot.entries(redis.url, "default", "default")
        assert entry.score == pytest.approx(1.1)  # the lease reported its success
    finally:
        redis.stop()
