"""A stand-in API server on loopback for the failures a real one cannot be
made to show on cue: connections dropped without an answer (a restart),
refusals with a Status body. The real client talks to it through a real
kubeconfig; what it answers is a function of the request."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

# (status, JSON body) to answer with, or None to drop the connection.
Answer = tuple[int, dict[str, Any]] | None
Answers = Callable[[str, str], Answer]


def status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    """A metav1.Status, as the API server sends with a refusal."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class FakeApi:
    def __init__(self, answers: Answers) -> None:
        self.answers = answers
        self.requests: list[tuple[str, str]] = []
        self.authorizations: list[str] = []  # each request's Authorization header
        self.bodies: list[bytes] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                fake.bodies.append(self.rfile.read(length))
                fake.authorizations.append(self.headers.get("Authorization") or "")
                fake.requests.append((self.command, self.path))
                answer = fake.answers(self.command, self.path)
                if answer is None:
                    self.close_connection = True
                    self.connection.close()
                    return
                code, body = answer
                data = json.dumps(body).encode() + b"\n"
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def kubeconfig(self, path: Path) -> Path:
        return write_kubeconfig(path, self.url)


def write_kubeconfig(path: Path, server: str, namespace: str | None = None) -> Path:
    """A kubeconfig for ``server`` (plain HTTP, a token), its context in
    ``namespace`` if given."""
    context: dict[str, str] = {"cluster": "fake", "user": "tenant"}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": server}}],
        "users": [{"name": "tenant", "user": {"token": "t"}}],
        "contexts": [{"name": "fake", "context": context}],
        "current-context": "fake",
    }
    path.write_text(json.dumps(config))
    return path


@contextmanager
def fake_api(answers: Answers) -> Iterator[FakeApi]:
    api = FakeApi(answers)
    thread = threading.Thread(target=api.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        api.server.shutdown()
        api.server.server_close()
        thread.join(timeout=10)
