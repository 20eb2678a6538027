"""``make dev-up`` / ``make dev-down``: the local cluster, Redis and the
operator (a pod on the node, operator_pod.py) in the background, so a person
can ``kubectl apply`` refreshes.

Redis is ``$PROXYREFRESH_REDIS_URL`` when set, in any form the product
takes (for a plain ``redis://`` URL a redis-server is started there if
nothing answers; a TLS or Sentinel URL is used as it is, with its CA and
the sentinels' password handed to the operator); otherwise a redis-server
on a free port. The
operator gets a free port for its liveness endpoint, and ``up`` reports
success only once that endpoint answers: nothing here depends on a fixed
port being free.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

from tests.harness.cluster import DEFAULT_DIR, Cluster, alive, stop_group, tools_bin
from tests.harness.kubectl import Kubectl
from tests.harness.operator_pod import NAMESPACE, OperatorPod
from tests.harness.testbed import free_port, healthy, start_logged, wait_for_port


def redis_url(cluster: Cluster) -> str:
    """The Redis the dev environment uses: the user's, the one it started
    before, or a new one on a free port."""
    given = os.environ.get("PROXYREFRESH_REDIS_URL") or cluster.state().get("redis_url")
    return str(given or f"redis://127.0.0.1:{free_port('127.0.0.1')}/0")


def listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def redis_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The Redis settings beside the URL that a user gave (a CA, the
    sentinels' password), as the operator's pod takes them: a CA file
    becomes its text, since the pod cannot read this machine's files."""
    env = {}
    if environ.get("PROXYREFRESH_REDIS_CA_FILE"):
        env["PROXYREFRESH_REDIS_CA_DATA"] = Path(environ["PROXYREFRESH_REDIS_CA_FILE"]).read_text()
    for name in ("PROXYREFRESH_REDIS_CA_DATA", "PROXYREFRESH_REDIS_SENTINEL_PASSWORD"):
        if environ.get(name):
            env[name] = environ[name]
    return env


def up(cluster: Cluster) -> None:
    took = cluster.up()
    print(
        f"dev: cluster up in {took:.1f}s (node {cluster.node_name}: kubelet, containerd)",
        file=sys.stderr,
    )
    state = cluster.state()
    pids = dict(state.get("dev_pids") or {})  # type: ignore[call-overload]
    chosen = redis_url(cluster)
    url = urlparse(chosen)
    plain = url.scheme == "redis"  # a TLS, Sentinel or Cluster URL is used as it is
    host, port = (url.hostname or "127.0.0.1", url.port or 6379) if plain else ("", 0)
    if plain and not listening(host, port):
        data = cluster.dir / "redis"
        data.mkdir(parents=True, exist_ok=True)
        server = shutil.which("redis-server") or "/usr/bin/redis-server"
        proc = start_logged(
            [
                server,
                "--bind",
                host,
                "--port",
                str(port),
                "--dir",
                str(data),
                "--appendonly",
                "yes",
                "--save",
                "",
            ],
            cluster.logs / "redis.log",
        )
        wait_for_port(host, port, proc=proc)
        pids["redis"] = proc.pid
        print(f"dev: redis-server on {host}:{port}", file=sys.stderr)
    Kubectl(cluster.kubeconfig).install_crds()
    ports = dict(state.get("dev_operator") or {})  # type: ignore[call-overload]
    if not healthy(int(ports.get("port", 0))):
        operator = OperatorPod(cluster, chosen, "operator", **redis_env(os.environ))
        operator.start()
        ports = {"port": operator.port, "metrics": operator.metrics_port}
    print(
        f"dev: operator pod running (kubectl logs -n {NAMESPACE} deploy/operator; "
        f"metrics http://127.0.0.1:{ports.get('metrics')}/metrics)",
        file=sys.stderr,
    )
    cluster.save_state(
        {**cluster.state(), "dev_pids": pids, "dev_operator": ports, "redis_url": chosen}
    )


def exports(cluster: Cluster) -> list[str]:
    """What `eval "$(make dev-up)"` sets: the cluster, its Redis, and a PATH
    with the pinned kubectl (and helm, crictl) and this checkout's
    proxyrefresh first."""
    venv = Path(sys.executable).parent
    return [
        f"export KUBECONFIG={cluster.kubeconfig}",
        f"export PROXYREFRESH_REDIS_URL={cluster.state().get('redis_url')}",
        f'export PATH="{tools_bin()}:{venv}:$PATH"',
    ]


def down(cluster: Cluster) -> None:
    pids = dict(cluster.state().get("dev_pids") or {})  # type: ignore[call-overload]
    # The operator is a pod: it goes with the cluster.
    pid = int(pids.get("redis", 0))
    if alive(pid):
        stop_group(pid, grace=10)
    state = cluster.state()
    state.pop("dev_pids", None)
    state.pop("dev_operator", None)
    state.pop("redis_url", None)
    cluster.save_state(state)
    cluster.down()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devenv", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument(
        "--dir", type=Path, default=Path(os.environ.get("PROXYREFRESH_CLUSTER_DIR", DEFAULT_DIR))
    )
    args = parser.parse_args(argv)
    cluster = Cluster(args.dir.resolve())
    if args.command == "up":
        started = time.monotonic()
        try:
            up(cluster)
        except (
            FileNotFoundError,
            TimeoutError,
            RuntimeError,
            subprocess.CalledProcessError,
        ) as exc:
            print(f"dev: {exc}", file=sys.stderr)
            down(cluster)
            return 1
        print(f"dev: ready in {time.monotonic() - started:.1f}s", file=sys.stderr)
        for line in exports(cluster):
            print(line)
    else:
        down(cluster)
        print("dev: down", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
