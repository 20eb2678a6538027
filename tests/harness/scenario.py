"""A whole refresh on one machine: candidates, a list server, the operator.

Shared by the e2e tests, ``make demo`` and bench/refresh_e2e.py, so the
three exercise exactly the same thing.
"""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from proxyrefresh.models import Anonymity
from tests.harness.testbed import (
    PPROXY,
    LocalProxy,
    Testbed,
    free_port,
    healthy,
    start_logged,
    wait_for_port,
)
from tests.harness.waiting import wait_until


@dataclass
class Candidates:
    """A candidate list and what a correct refresh must make of it."""

    urls: list[str] = field(default_factory=list)
    live: dict[str, Anonymity] = field(default_factory=dict)
    holes: set[str] = field(default_factory=set)  # the black holes: each costs a timeout

    def usable(self, least: Anonymity = Anonymity.ANONYMOUS) -> set[str]:
        return {url for url, level in self.live.items() if level.at_least(least)}

    def text(self) -> str:
        return "\n".join(self.urls) + "\n"


def pproxy_fleet(bed: Testbed, ip: str, count: int) -> list[LocalProxy]:
    """``count`` live elite proxies (HTTP and SOCKS5 alternately) in one
    pproxy process, each on its own port."""
    if count <= 0:
        return []
    ports: list[int] = []
    seen: set[int] = set()
    while len(ports) < count:  # the kernel may hand out a port twice: keep the new ones
        port = free_port(ip)
        if port not in seen:
            seen.add(port)
            ports.append(port)
    schemes = ["http" if i % 2 else "socks5" for i in range(count)]
    args = [a for s, p in zip(schemes, ports, strict=True) for a in ("-l", f"{s}://{ip}:{p}/@in")]
    proc, log = bed.spawn(f"pproxy-fleet-{ip}", [*PPROXY, *args])
    for port in ports:
        wait_for_port(ip, port, proc=proc, log=log)
    return [
        LocalProxy(f"fleet-{ip}-{p}", f"{s}://{ip}:{p}", Anonymity.ELITE, ip)
        for s, p in zip(schemes, ports, strict=True)
    ]


PER_ADDRESS = 10_000  # dead ends per address (and per listener process: its fd limit)


def spread(make: Callable[[str, int], list[LocalProxy]], ip: str, count: int) -> list[LocalProxy]:
    """``count`` dead ends, at most PER_ADDRESS on each address: ``ip``, then
    the same last octet in 127.1.0.x, 127.2.0.x, ... (the kernel hands out
    fewer free ports per address than a 100,000-candidate run needs)."""
    last = ip.rsplit(".", 1)[1]
    out: list[LocalProxy] = []
    for i in range(0, count, PER_ADDRESS):
        address = ip if i == 0 else f"127.{i // PER_ADDRESS}.0.{last}"
        out += make(address, min(PER_ADDRESS, count - i))
    return out


def build_candidates(
    bed: Testbed,
    fixed: list[LocalProxy],
    fleet: int,
    refused: int,
    holes: int,
    fleet_ip: str = "127.0.0.40",
    refused_ip: str = "127.0.0.41",
    holes_ip: str = "127.0.0.43",
) -> Candidates:
    """Fixed proxies (every level), a fleet of elite ones, refused ports and
    black holes, interleaved so each chunk gets a mix."""
    proxies = [*fixed, *pproxy_fleet(bed, fleet_ip, fleet)]
    # Refused ports and black holes on separate addresses: a port just
    # found free could otherwise be handed to a black hole next.
    refused_list = spread(bed.refused, refused_ip, refused)
    holes_list = spread(bed.blackholes, holes_ip, holes)
    dead = [p for pair in zip(holes_list, refused_list, strict=False) for p in pair]
    dead += refused_list[len(holes_list) :] + holes_list[len(refused_list) :]
    out = Candidates()
    mixed: list[LocalProxy] = []
    step = max(1, len(dead) // max(1, len(proxies)))
    for i, proxy in enumerate(proxies):
        mixed += [proxy, *dead[i * step : (i + 1) * step]]
    mixed += dead[len(proxies) * step :]
    out.holes = {p.url for p in holes_list}
    for proxy in mixed:
        out.urls.append(proxy.url)
        if proxy.expect is not None:
            out.live[proxy.url] = proxy.expect
    return out


class ListServer:
    """Serves candidate lists over HTTP on loopback, as a proxy site would."""

    def __init__(self, root: Path, host: str = "127.0.0.3", port: int = 0) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        handler = functools.partial(Quiet, directory=str(root))
        self.server = http.server.ThreadingHTTPServer((host, port), handler)
        self.host = host
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def put(self, name: str, text: str) -> str:
        (self.root / name).write_text(text)
        return f"http://{self.host}:{self.server.server_address[1]}/{name}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


# Everything of the testbed (lists, judges, proxies) lives on loopback, which
# the network guard refuses by default: the local operator allows it, and
# says so here, in one place. Tests of the guard itself pass their own rule.
LOOPBACK_ALLOWED = {"PROXYREFRESH_NETWORK_ALLOWED": '["127.0.0.0/8"]'}


# The local node's pods: the project's image as hack/image.sh imported it
# (never pulled), on the node's network, where the test bed's judge, proxies
# and Redis listen (loopback).
NODE_WORKERS = {
    "PROXYREFRESH_OPERATOR_WORKER_IMAGE": "proxyrefresh:dev",
    "PROXYREFRESH_OPERATOR_WORKER_IMAGE_PULL_POLICY": "Never",
    "PROXYREFRESH_OPERATOR_WORKER_HOST_NETWORK": "true",
}


def operator_env(redis_url: str, port: int, metrics_port: int, **env: str) -> dict[str, str]:
    """The operator's settings for a test: the bed's loopback allowed, its
    workers on the node, liveness and metrics on loopback ports."""
    return {
        **LOOPBACK_ALLOWED,
        **NODE_WORKERS,
        "PROXYREFRESH_REDIS_URL": redis_url,
        "PROXYREFRESH_OPERATOR_LIVENESS_ENDPOINT": f"http://127.0.0.1:{port}/healthz",
        "PROXYREFRESH_OPERATOR_METRICS_ADDRESS": "127.0.0.1",
        "PROXYREFRESH_OPERATOR_METRICS_PORT": str(metrics_port),
        **env,
    }


class OperatorProcess:
    """``proxyrefresh operator`` as a local process, killable and restartable;
    its workers are real containers on the local node. (The e2e tests run
    the operator as a pod: operator_pod.OperatorPod.)"""

    def __init__(self, kubeconfig: Path, redis_url: str, log: Path, **env: str) -> None:
        self.log = log
        self.port = free_port("127.0.0.1")
        self.metrics_port = free_port("127.0.0.1")
        self.env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            **operator_env(redis_url, self.port, self.metrics_port, **env),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self, timeout: float = 60) -> None:
        """Start it and return once its liveness endpoint answers 200."""
        self.proc = start_logged(
            [sys.executable, "-m", "proxyrefresh.front.cli", "operator"], self.log, env=self.env
        )
        proc = self.proc
        wait_for_port("127.0.0.1", self.port, timeout=timeout, proc=proc, log=self.log)

        def gone() -> str | None:
            return None if proc.poll() is None else f"the operator exited with {proc.returncode}"

        what = f"the operator alive on 127.0.0.1:{self.port}"
        wait_until(lambda: healthy(self.port), timeout, what, gone=gone, log=self.log)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, kill: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            (self.proc.kill if kill else self.proc.terminate)()
            self.proc.wait(timeout=30)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()
