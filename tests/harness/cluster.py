"""A real local Kubernetes cluster: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, and one real node (containerd, runc
and kubelet; node.py) that runs pods as containers of images made here
(hack/image.sh). Everything is built from Go modules by hack/tools.sh. State
(certificates, etcd data, the node's files, logs, pids) lives in one
directory, so ``cluster down`` from another process finds what ``up``
started.

    python -m tests.harness.cluster up [--dir DIR]     # prints export KUBECONFIG=...
    python -m tests.harness.cluster down [--dir DIR]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import secrets
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.harness.image import build_images
from tests.harness.kubeconfig import write_kubeconfig
from tests.harness.node import (
    NODE_NAME,
    Node,
    NodeUnavailable,
    claim,
    hold_claim,
    release,
    requirements,
)
from tests.harness.testbed import free_port, healthy, start_logged, wait_for_port
from tests.harness.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DIR = ROOT / ".cluster"
SERVICE_CIDR = "10.0.0.0/24"
ISSUER = "https://kubernetes.default.svc.cluster.local"
CONTROLLERS = [
    "job-controller",
    "cronjob-controller",
    "garbage-collector-controller",
    "ttl-after-finished-controller",
    "deployment-controller",
    "replicaset-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "clusterrole-aggregation-controller",
    "root-ca-certificate-publisher-controller",
    # A ResourceQuota holds only once this has counted what it covers.
    "resourcequota-controller",
    # Lifts the not-ready taint kubelet registers its Node with.
    "node-lifecycle-controller",
]
COMPONENTS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "containerd",
    "kubelet",
)


def tools_bin() -> Path:
    cache = os.environ.get("PROXYREFRESH_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "proxyrefresh"
    )
    return Path(cache) / "bin"


def binary(name: str) -> str:
    path = tools_bin() / name
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(
            f"{path} is missing: run `make bootstrap` (hack/tools.sh builds it from Go modules)"
        )
    return str(path)


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@dataclass
class Cluster:
    """One control plane's state directory and how to reach it."""

    dir: Path

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def certs(self) -> Path:
        return self.dir / "certs"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    def state(self) -> dict[str, object]:
        try:
            return dict(json.loads(self.state_file.read_text()))
        except (OSError, ValueError):
            return {}

    def save_state(self, state: dict[str, object]) -> None:
        self.state_file.write_text(json.dumps(state, indent=2))

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.state()['apiserver_port']}"

    @property
    def token(self) -> str:
        return str(self.state()["admin_token"])

    # --- one-time material ------------------------------------------------

    def _certificates(self) -> None:
        c = self.certs
        if (c / "apiserver.crt").exists():
            return
        c.mkdir(parents=True, exist_ok=True)
        openssl(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "3650",
            "-keyout",
            str(c / "ca.key"),
            "-out",
            str(c / "ca.crt"),
            "-subj",
            "/CN=proxyrefresh-local-ca",
        )
        ext = c / "apiserver.ext"
        ext.write_text(
            "subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,"
            "DNS:kubernetes.default,DNS:kubernetes.default.svc,"
            "DNS:kubernetes.default.svc.cluster.local\n"
            "extendedKeyUsage=serverAuth\n"
        )
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(c / "apiserver.key"),
            "-out",
            str(c / "apiserver.csr"),
            "-subj",
            "/CN=kube-apiserver",
        )
        openssl(
            "x509",
            "-req",
            "-in",
            str(c / "apiserver.csr"),
            "-CA",
            str(c / "ca.crt"),
            "-CAkey",
            str(c / "ca.key"),
            "-CAcreateserial",
            "-days",
            "3650",
            "-extfile",
            str(ext),
            "-out",
            str(c / "apiserver.crt"),
        )
        openssl("genrsa", "-out", str(c / "sa.key"), "2048")
        openssl("rsa", "-in", str(c / "sa.key"), "-pubout", "-out", str(c / "sa.pub"))

    def _write_kubeconfig(self, path: Path, user: str, token: str) -> None:
        ca = base64.b64encode((self.certs / "ca.crt").read_bytes()).decode()
        write_kubeconfig(path, self.server, ca, user, token)

    # --- processes ----------------------------------------------------------

    def _spawn(self, name: str, args: list[str]) -> int:
        # From the checkout's root, so `-m tests.harness...` resolves wherever we were started.
        return start_logged(args, self.logs / f"{name}.log", cwd=ROOT).pid

    def pids(self) -> dict[str, int]:
        raw = self.state().get("pids", {})
        return {str(k): int(v) for k, v in dict(raw).items()}  # type: ignore[call-overload]

    @property
    def node_name(self) -> str:
        return NODE_NAME

    @property
    def node(self) -> Node:
        return Node(self.dir / "node", tools_bin(), SERVICE_CIDR)

    def running(self) -> bool:
        pids = self.pids()
        return bool(pids) and all(alive(pids.get(c, 0)) for c in COMPONENTS) and self.healthy()

    def healthy(self) -> bool:
        try:
            return self.get("/readyz").strip() == b"ok"
        except OSError:
            return False

    def get(self, path: str) -> bytes:
        context = ssl.create_default_context(cafile=str(self.certs / "ca.crt"))
        request = urllib.request.Request(
            self.server + path, headers={"Authorization": f"Bearer {self.token}"}
        )
        with urllib.request.urlopen(request, context=context, timeout=5) as resp:
            return bytes(resp.read())

    def up(self) -> float:
        """Start everything that is not running; returns the seconds it took.
        What fails half-way is taken down again, the node's leftovers too."""
        started = time.monotonic()
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.running():
            return 0.0
        self.down()
        missing = requirements(tools_bin())
        if missing:
            raise NodeUnavailable("a real node needs: " + "; ".join(missing))
        claim(self.dir, alive)
        try:
            self._start()
        except BaseException:
            self.down()
            raise
        return time.monotonic() - started

    def _start(self) -> None:
        archives = build_images()
        self._certificates()
        state = self.state()
        token = str(state.get("admin_token") or secrets.token_hex(24))
        state.update(
            admin_token=token,
            etcd_port=free_port("127.0.0.1"),
            etcd_peer_port=free_port("127.0.0.1"),
            apiserver_port=free_port("127.0.0.1"),
        )
        self.save_state(state)
        (self.certs / "tokens.csv").write_text(f'{token},admin,admin-uid,"system:masters"\n')
        c, pids = self.certs, {}
        etcd_url = f"http://127.0.0.1:{state['etcd_port']}"
        peer_url = f"http://127.0.0.1:{state['etcd_peer_port']}"
        pids["etcd"] = self._spawn(
            "etcd",
            [
                binary("etcd"),
                "--name",
                "local",
                "--data-dir",
                str(self.dir / "etcd"),
                "--listen-client-urls",
                etcd_url,
                "--advertise-client-urls",
                etcd_url,
                "--listen-peer-urls",
                peer_url,
                "--initial-advertise-peer-urls",
                peer_url,
                "--initial-cluster",
                f"local={peer_url}",
                "--unsafe-no-fsync",
                "--log-level",
                "warn",
                "--quota-backend-bytes",
                str(2 * 1024**3),
            ],
        )
        self.save_state({**state, "pids": pids})
        wait_for_port("127.0.0.1", int(state["etcd_port"]), timeout=30)  # type: ignore[call-overload]
        pids["kube-apiserver"] = self._spawn(
            "kube-apiserver",
            [
                binary("kube-apiserver"),
                "--etcd-servers",
                etcd_url,
                "--bind-address",
                "127.0.0.1",
                "--advertise-address",
                "127.0.0.1",
                "--secure-port",
                str(state["apiserver_port"]),
                "--tls-cert-file",
                str(c / "apiserver.crt"),
                "--tls-private-key-file",
                str(c / "apiserver.key"),
                "--client-ca-file",
                str(c / "ca.crt"),
                "--token-auth-file",
                str(c / "tokens.csv"),
                "--authorization-mode",
                "RBAC",
                "--anonymous-auth=false",
                "--service-account-issuer",
                ISSUER,
                "--api-audiences",
                ISSUER,
                "--service-account-key-file",
                str(c / "sa.pub"),
                "--service-account-signing-key-file",
                str(c / "sa.key"),
                "--service-cluster-ip-range",
                SERVICE_CIDR,
                "--allow-privileged",
                "--enable-priority-and-fairness=false",
                "--profiling=false",
                "--cert-dir",
                str(c),
                # The node's own address, never a name for the machine's resolver.
                "--kubelet-preferred-address-types",
                "InternalIP",
            ],
        )
        self.save_state({**state, "pids": pids})
        self._write_kubeconfig(self.kubeconfig, "admin", token)
        wait(
            self.healthy,
            60,
            "kube-apiserver /readyz",
            self.logs / "kube-apiserver.log",
            pids["kube-apiserver"],
        )
        pids["kube-controller-manager"] = self._spawn(
            "kube-controller-manager",
            [
                binary("kube-controller-manager"),
                "--kubeconfig",
                str(self.kubeconfig),
                "--controllers",
                ",".join(CONTROLLERS),
                "--leader-elect=false",
                "--bind-address",
                "127.0.0.1",
                "--secure-port",
                str(free_port("127.0.0.1")),
                "--root-ca-file",
                str(c / "ca.crt"),
                "--service-account-private-key-file",
                str(c / "sa.key"),
                "--use-service-account-credentials=false",
                "--concurrent-job-syncs",
                "10",
                "--concurrent-cron-job-syncs",
                "5",
            ],
        )
        self.save_state({**state, "pids": pids})
        self._start_node(pids, state, archives)
        kcm_log = self.logs / "kube-controller-manager.log"
        wait(
            self._default_sa,
            30,
            "the default ServiceAccount",
            kcm_log,
            pids["kube-controller-manager"],
        )

    def _start_node(
        self, pids: dict[str, int], state: dict[str, object], archives: list[Path]
    ) -> None:
        """kube-scheduler, then containerd with the images imported, then kubelet."""
        pids["kube-scheduler"] = self._spawn(
            "kube-scheduler",
            [
                binary("kube-scheduler"),
                "--kubeconfig",
                str(self.kubeconfig),
                "--leader-elect=false",
                "--bind-address",
                "127.0.0.1",
                "--secure-port",
                str(free_port("127.0.0.1")),
            ],
        )
        node = self.node
        node.guard_routes()
        state["node"] = node.configure(self.kubeconfig)
        self.save_state({**state, "pids": pids})
        node.make_run_dir()
        args, env = node.containerd_args()
        pids["containerd"] = start_logged(args, self.logs / "containerd.log", env=env).pid
        hold_claim(self.dir, pids["containerd"])
        self.save_state({**state, "pids": pids})
        node.wait_socket(lambda: alive(pids["containerd"]))
        node.import_images(archives)
        pids["kubelet"] = self._spawn("kubelet", node.kubelet_args())
        self.save_state({**state, "pids": pids})
        wait(
            self._node_schedulable,
            60,
            f"node {self.node_name} Ready without its not-ready taint",
            self.logs / "kubelet.log",
            pids["kubelet"],
        )

    def restart_kubelet(self) -> float:
        """Stop kubelet (SIGTERM, as a node upgrade does) and start it again;
        its containers run on under containerd meanwhile. Returns the seconds
        until the Node is Ready again."""
        started = time.monotonic()
        pids = self.pids()
        stop_group(pids["kubelet"], grace=10)
        pids["kubelet"] = self._spawn("kubelet", self.node.kubelet_args())
        self.save_state({**self.state(), "pids": pids})
        wait(self._kubelet_healthy, 60, "kubelet back", self.logs / "kubelet.log", pids["kubelet"])
        return time.monotonic() - started

    def _kubelet_healthy(self) -> bool:
        node = dict(self.state().get("node") or {})  # type: ignore[call-overload]
        return healthy(int(node.get("kubelet_healthz_port") or 0))

    def _node_schedulable(self) -> bool:
        try:
            found = json.loads(self.get(f"/api/v1/nodes/{self.node_name}"))
        except (OSError, ValueError):
            return False
        ready = any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in found.get("status", {}).get("conditions", [])
        )
        return ready and not found.get("spec", {}).get("taints")

    def _default_sa(self) -> bool:
        try:
            return bool(self.get("/api/v1/namespaces/default/serviceaccounts/default"))
        except OSError:
            return False

    def down(self) -> None:
        """Stop every process this directory recorded, last started first; a
        real node's pods, mounts, bridge, cgroups and sysctls are undone."""
        pids = self.pids()
        state = self.state()
        for name in reversed(COMPONENTS):
            pid = pids.get(name)
            if name == "containerd":
                self.node.remove_pods()
            if pid and alive(pid):
                stop_group(pid, grace=10)
        if "node" in state:
            self.node.clean(dict(state.pop("node")))  # type: ignore[call-overload]
        release(self.dir)
        state.pop("pids", None)
        if state:
            self.save_state(state)
        # etcd data is per run: a fresh cluster each time up() starts one.
        subprocess.run(["rm", "-rf", str(self.dir / "etcd")], check=False)


def alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def stop_group(pid: int, grace: float) -> None:
    """SIGTERM the process group, then SIGKILL what is left after ``grace``."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and alive(pid):
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def wait(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    log: Path | None = None,
    pid: int | None = None,
) -> None:
    """Wait for ``predicate``; fail at once if ``pid`` dies, with its log."""

    def gone() -> str | None:
        return "exited" if pid is not None and not alive(pid) else None

    wait_until(predicate, timeout, what, gone=gone, log=log, interval=0.2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cluster", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["up", "down", "kubeconfig"])
    parser.add_argument(
        "--dir", type=Path, default=Path(os.environ.get("PROXYREFRESH_CLUSTER_DIR", DEFAULT_DIR))
    )
    args = parser.parse_args(argv)
    cluster = Cluster(args.dir.resolve())
    if args.command == "up":
        try:
            took = cluster.up()
        except (
            FileNotFoundError,
            TimeoutError,
            NodeUnavailable,
            subprocess.CalledProcessError,
        ) as exc:
            print(f"cluster: {exc}", file=sys.stderr)
            cluster.down()
            return 1
        print(f"cluster: up in {took:.1f}s ({cluster.server})", file=sys.stderr)
        print(f"export KUBECONFIG={cluster.kubeconfig}")
    elif args.command == "down":
        cluster.down()
        print("cluster: down", file=sys.stderr)
    else:
        print(cluster.kubeconfig)
    return 0


if __name__ == "__main__":
    sys.exit(main())
