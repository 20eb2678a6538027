"""A ``proxyrefresh rotate`` process over a pool, and the pieces its tests need:
a pool filled from the testbed's proxies, and a local TLS server."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis as AsyncRedis

from proxyrefresh.models import Anonymity, Protocol
from proxyrefresh.pool import AsyncPool, PoolEntry
from tests.harness.testbed import (
    ROOT,
    LocalProxy,
    RedisServer,
    free_port,
    start_logged,
    wait_for_port,
)

if TYPE_CHECKING:
    from tests.conftest import Bed


def entry_for(proxy: LocalProxy, latency_ms: float = 50.0) -> PoolEntry:
    """The pool entry a refresh would have made of ``proxy`` while it worked
    (a dead one is in the pool as if it died since)."""
    protocol, _, rest = proxy.url.partition("://")
    host, _, port = rest.rpartition("@")[2].rpartition(":")
    now = time.time()
    return PoolEntry(
        proxy=proxy.url,
        protocol=Protocol(protocol),
        host=host,
        port=int(port),
        anonymity=proxy.expect or Anonymity.ELITE,
        exit_ip=proxy.exit_ip,
        latency_ms=latency_ms,
        last_checked=now,
        last_ok=now,
    )


async def merge_into(
    redis_url: str, namespace: str, name: str, proxies: Iterable[LocalProxy]
) -> None:
    """Merge ``proxies`` into the pool as a refresh would."""
    redis = AsyncRedis.from_url(redis_url, decode_responses=True)
    try:
        items = [(p.url, True, entry_for(p)) for p in proxies]
        await AsyncPool(redis, name, namespace).merge(uuid.uuid4().hex, items, ttl=3600)
    finally:
        await redis.aclose()


def fill(redis_url: str, namespace: str, name: str, proxies: Iterable[LocalProxy]) -> None:
    asyncio.run(merge_into(redis_url, namespace, name, proxies))


def entries(redis_url: str, namespace: str, name: str) -> list[PoolEntry]:
    from redis import Redis

    from proxyrefresh.pool import Pool

    with Redis.from_url(redis_url, decode_responses=True) as redis:
        return Pool(redis, name, namespace).entries()


@dataclass
class Rotator:
    proc: subprocess.Popen[bytes]
    proxy: str  # http://127.0.0.1:PORT
    api: str  # http://127.0.0.1:PORT
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def health(self) -> dict[str, Any]:
        import requests

        return dict(requests.get(self.api + "/healthz", timeout=5).json())


def start(
    workdir: Path, redis_url: str, pool: str, namespace: str, *args: str, **env: str
) -> Rotator:
    port, api_port = free_port("127.0.0.1"), free_port("127.0.0.1")
    log = workdir / f"rotator-{port}.log"
    proc = start_logged(
        [
            sys.executable,
            "-m",
            "proxyrefresh.front.cli",
            "rotate",
            "--pool",
            pool,
            "-n",
            namespace,
            "--listen",
            f"127.0.0.1:{port}",
            "--api-listen",
            f"127.0.0.1:{api_port}",
            "--wait-for-pool",
            *args,
        ],
        log,
        cwd=ROOT,
        env={**os.environ, "PROXYREFRESH_REDIS_URL": redis_url, **env},
    )
    wait_for_port("127.0.0.1", api_port, proc=proc, log=log)
    wait_for_port("127.0.0.1", port, proc=proc, log=log)
    return Rotator(proc, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{api_port}", log)


def certificate(workdir: Path, ip: str) -> tuple[Path, Path]:
    """A self-signed certificate for ``ip`` (openssl), and its key."""
    cert, key = workdir / f"tls-{ip}.pem", workdir / f"tls-{ip}.key"
    if not cert.exists():
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                f"/CN={ip}",
                "-addext",
                f"subjectAltName=IP:{ip}",
                "-keyout",
                str(key),
                "-out",
                str(cert),
            ],
            check=True,
            capture_output=True,
        )
    return cert, key


class _Echo(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"remote_addr": self.client_address[0], "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


class TlsServer:
    """An HTTPS server on loopback that says which address reached it."""

    def __init__(self, workdir: Path, ip: str = "127.0.0.3") -> None:
        self.cert, key = certificate(workdir, ip)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, key)
        self.server = ThreadingHTTPServer((ip, free_port(ip)), _Echo)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://{ip}:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


ROTATE_NAMESPACE = "rotate"


@dataclass
class Rotating:
    """A fresh pool in the session's Redis, and the rotators started over it
    (the ``rotating`` fixture, tests/integration/conftest.py)."""

    bed: Bed
    redis: RedisServer
    pool: str = field(default_factory=lambda: f"r{uuid.uuid4().hex[:8]}")
    started: list[Rotator] = field(default_factory=list)

    def fill(self, proxies: list[LocalProxy], pool: str | None = None) -> None:
        fill(self.redis.url, ROTATE_NAMESPACE, pool or self.pool, proxies)

    def start(self, *args: str, redis_url: str | None = None, **env: str) -> Rotator:
        r = start(
            self.bed.testbed.workdir,
            redis_url or self.redis.url,
            self.pool,
            ROTATE_NAMESPACE,
            *args,
            **env,
        )
        self.started.append(r)
        return r
