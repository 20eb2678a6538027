"""A real node for the local control plane: containerd, runc and kubelet.

The pods of a cluster started with ``runtime="kubelet"`` are real containers
of real images: kubelet v1.34 (built with the control plane, hack/tools.sh),
containerd v2 built from its module, Debian's runc and CNI plugins, and the
project's image built from its Dockerfile (hack/image.sh). What this machine
needs of them, and why, is in shared notes the harness follows:

- root here has no CAP_SYS_RESOURCE, so containerd may ask for no
  oom_score_adj below its own (``restrict_oom_score_adj``);
- kubelet refuses a loopback node IP but takes one as the hostname override,
  so the Node is ``127.0.0.1`` and the API server reaches kubelet there;
- cgroups are v1 here (``failCgroupV1: false``).

Nothing may leave the machine. No image is ever pulled: every image is
imported before use, and containerd's registry configuration sends every
host to a closed loopback port (so does its proxy setting). Pods on the CNI
bridge have no gateway, no masquerading and no route but their bridge's
subnet; IP forwarding stays off (the bridge plugin turns it on only for a
gateway). On the host, the pod and service ranges get ``unreachable`` routes
before anything starts, so a packet for them fails here instead of taking the
default route. Stopping undoes all of it: pods, mounts, the bridge, kubelet's
cgroups, the sysctls kubelet sets, and its hard-coded directories.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.harness.testbed import free_port

NODE_NAME = "127.0.0.1"
POD_RANGE = "10.244.0.0/16"
# The sysctls kubelet sets at every start, restored by stop().
KUBELET_SYSCTLS = ("vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops")
# What kubelet creates whatever it is told (see stop()).
HARD_CODED_LEFTOVERS = (
    "/var/lib/kubelet/device-plugins",
    "/var/log/containers",
    "/var/log/pods",
    "/var/lib/cni/results",
)
CNI_BIN = "/usr/lib/cni"
# How containerd's CRI says it pulls (or tries to): "PullImage", "fetch failed".
PULL = re.compile(r"PullImage|[Pp]ulling image|fetch failed|failed to resolve reference")
RUNC = "/usr/sbin/runc"
DEBIAN_PACKAGES = ("runc", "containernetworking-plugins", "buildah", "mmdebstrap", "iproute2")


# One real node per machine: two kubelets would share the kubepods cgroups
# (each removes the pods it does not know) and the bridge. Whose node runs is
# written here.
CLAIM = Path("/run/proxyrefresh-node.json")


class NodeUnavailable(RuntimeError):
    """Something the node needs is not on this machine; the message says what."""


def claim(cluster_dir: Path, alive: Callable[[int], bool]) -> None:
    """Take this machine's node for ``cluster_dir``, or say whose it is."""
    try:
        held = json.loads(CLAIM.read_text())
    except (OSError, ValueError):
        held = {}
    other = held.get("dir")
    if other and other != str(cluster_dir) and alive(int(held.get("pid") or 0)):
        raise NodeUnavailable(
            f"another local cluster's node runs on this machine (its directory: {other}); "
            f"stop it first: python -m tests.harness.cluster down --dir {other}"
        )
    CLAIM.write_text(json.dumps({"dir": str(cluster_dir), "pid": os.getpid()}))


def hold_claim(cluster_dir: Path, pid: int) -> None:
    """The claim lasts as long as ``pid`` (containerd) runs."""
    CLAIM.write_text(json.dumps({"dir": str(cluster_dir), "pid": pid}))


def release(cluster_dir: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        if json.loads(CLAIM.read_text()).get("dir") == str(cluster_dir):
            CLAIM.unlink()


def requirements(bin_dir: Path) -> list[str]:
    """What is missing for a real node, each with how to get it."""
    missing = [
        f"{bin_dir / n} (make bootstrap: hack/tools.sh builds it)"
        for n in ("kubelet", "kube-scheduler", "containerd", "containerd-shim-runc-v2", "crictl")
        if not os.access(bin_dir / n, os.X_OK)
    ]
    if not os.access(RUNC, os.X_OK) or not Path(CNI_BIN, "bridge").exists():
        missing.append("runc, CNI plugins (apt-get install runc containernetworking-plugins)")
    if os.geteuid() != 0:
        missing.append("root (containerd and kubelet run as root)")
    return missing


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def route_get(address: str, pid: int | None = None) -> str:
    """What the kernel would do with a packet to ``address``, from the host or
    from the network namespace of process ``pid``: a look-up, nothing is sent.
    Starts with "unreachable" when there is no way there."""
    enter = ["nsenter", "-t", str(pid), "-n"] if pid else []
    result = subprocess.run(
        [*enter, "ip", "route", "get", address], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        return f"unreachable: {result.stderr.strip()}"
    return result.stdout.strip()


FORWARDING_OFF = {"net/ipv4/ip_forward": "0", "net/ipv6/conf/all/forwarding": "0"}


def guard_routes_left() -> list[str]:
    """The unreachable routes a node installs, if any are still there."""
    routes = ip("route", "show", "type", "unreachable", check=False).stdout.splitlines()
    return [r for r in routes if POD_RANGE in r]


def pull_attempts(containerd_log: Path) -> list[str]:
    """The lines of containerd's log where it asked a registry for an image."""
    text = containerd_log.read_text(errors="replace") if containerd_log.exists() else ""
    return [line for line in text.splitlines() if PULL.search(line)]


def sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name


def forwarding() -> dict[str, str]:
    """IP forwarding as the kernel has it now (all must stay "0")."""
    paths = ("net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding")
    return {p: sysctl_path(p).read_text().strip() for p in paths}


@dataclass
class Node:
    """One node's files under ``dir``; its processes are the cluster's."""

    dir: Path
    bin_dir: Path
    service_range: str
    bridge: str = "prf0"
    subnet: str = "10.244.77.0/24"

    @property
    def run_dir(self) -> Path:
        """containerd's sockets: a short path of its own (its shims' socket
        directory may be 42 characters at most, a unix socket's path 107),
        named after the node's directory."""
        digest = hashlib.sha256(str(self.dir).encode()).hexdigest()[:8]
        return Path("/run") / f"proxyrefresh-{digest}"

    @property
    def socket(self) -> Path:
        return self.run_dir / "containerd.sock"

    @property
    def kubelet_root(self) -> Path:
        return self.dir / "kubelet" / "root"

    @property
    def containerd_log(self) -> Path:
        return self.dir.parent / "logs" / "containerd.log"

    # --- configuration -----------------------------------------------------

    def configure(self, kubeconfig: Path) -> dict[str, object]:
        """Write containerd's, CNI's and kubelet's configuration; returns
        what stop() needs to undo (sysctls, ports)."""
        d = self.dir
        for sub in ("containerd", "certs.d/_default", "cni/net.d", "kubelet/root"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        # Every registry host goes to a closed loopback port: a pull fails here.
        (d / "certs.d" / "_default" / "hosts.toml").write_text(
            'server = "http://127.0.0.1:1"\n'
            '[host."http://127.0.0.1:1"]\n'
            '  capabilities = ["pull", "resolve"]\n'
        )
        (d / "containerd.toml").write_text(self._containerd_config())
        (d / "cni" / "net.d" / "10-proxyrefresh.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "0.4.0",
                    "name": "proxyrefresh",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": self.bridge,
                            # Never a gateway: the plugin turns IP forwarding
                            # on for one, and pods must reach only each other.
                            "isGateway": False,
                            "isDefaultGateway": False,
                            "ipMasq": False,
                            "hairpinMode": False,
                            "ipam": {
                                "type": "host-local",
                                "dataDir": str(d / "cni" / "ipam"),
                                "ranges": [[{"subnet": self.subnet}]],
                            },
                        }
                    ],
                }
            )
        )
        (d / "kubelet" / "resolv.conf").write_text("nameserver 127.0.0.1\n")
        shutil.copy(kubeconfig, d / "kubelet" / "kubeconfig")
        port, healthz = free_port("127.0.0.1"), free_port("127.0.0.1")
        (d / "kubelet.yaml").write_text(self._kubelet_config(port, healthz))
        return {
            "kubelet_port": port,
            "kubelet_healthz_port": healthz,
            "sysctls": {n: sysctl_path(n).read_text().strip() for n in KUBELET_SYSCTLS},
        }

    def _containerd_config(self) -> str:
        d = self.dir
        cri_runtime = 'plugins."io.containerd.cri.v1.runtime"'
        return f"""version = 3
root = "{d}/containerd/root"
state = "{d}/containerd/state"
imports = []
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.blockfile",
  "io.containerd.snapshotter.v1.erofs", "io.containerd.differ.v1.erofs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.nri.v1.nri"]
[grpc]
  address = "{self.socket}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/containerd/opt"
[plugins."io.containerd.shim.v1.manager"]
  socket_dir = "{self.run_dir}/s"
[plugins."io.containerd.transfer.v1.local"]
  config_path = "{d}/certs.d"
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "localhost/proxyrefresh-pause:1"
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = "{d}/certs.d"
[{cri_runtime}]
  enable_selinux = false
  disable_apparmor = true
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [{cri_runtime}.containerd]
    default_runtime_name = "runc"
    [{cri_runtime}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri_runtime}.containerd.runtimes.runc.options]
        BinaryName = "{RUNC}"
        SystemdCgroup = false
        Root = "{d}/containerd/runc"
  [{cri_runtime}.cni]
    bin_dirs = ["{CNI_BIN}"]
    conf_dir = "{d}/cni/net.d"
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
"""

    def _kubelet_config(self, port: int, healthz: int) -> str:
        d = self.dir / "kubelet"
        return f"""apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: {port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {healthz}
authentication: {{anonymous: {{enabled: true}}, webhook: {{enabled: false}}}}
authorization: {{mode: AlwaysAllow}}
cgroupDriver: cgroupfs
failSwapOn: false
failCgroupV1: false
containerRuntimeEndpoint: unix://{self.socket}
imageServiceEndpoint: unix://{self.socket}
resolvConf: {d}/resolv.conf
podLogsDir: {d}/pod-logs
volumePluginDir: {d}/volume-plugins
makeIPTablesUtilChains: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {{memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}}
maxPods: 32
serializeImagePulls: false
syncFrequency: 10s
fileCheckFrequency: 5s
nodeStatusUpdateFrequency: 5s
shutdownGracePeriod: 0s
"""

    # --- processes -----------------------------------------------------------

    def guard_routes(self) -> None:
        """Packets for the pod and service ranges fail here, before any pod
        exists: only the bridge's own subnet is reachable, from its pods."""
        for cidr in (POD_RANGE, self.service_range):
            ip("route", "replace", "unreachable", cidr)

    def make_run_dir(self) -> None:
        self.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    def containerd_args(self) -> tuple[list[str], dict[str, str]]:
        env = {
            **os.environ,
            # A second lock on pulls: any registry traffic goes to a closed port.
            "HTTP_PROXY": "http://127.0.0.1:1",
            "HTTPS_PROXY": "http://127.0.0.1:1",
            "NO_PROXY": "",
            "PATH": f"{self.bin_dir}:{os.environ.get('PATH', '')}",
        }
        config = str(self.dir / "containerd.toml")
        return [str(self.bin_dir / "containerd"), "--config", config], env

    def kubelet_args(self) -> list[str]:
        return [
            str(self.bin_dir / "kubelet"),
            "--config",
            str(self.dir / "kubelet.yaml"),
            "--kubeconfig",
            str(self.dir / "kubelet" / "kubeconfig"),
            "--root-dir",
            str(self.kubelet_root),
            "--cert-dir",
            str(self.dir / "kubelet" / "certs"),
            "--hostname-override",
            NODE_NAME,
            "--v=1",
        ]

    def ctr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin_dir / "ctr"), "--address", str(self.socket), "-n", "k8s.io", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def crictl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin_dir / "crictl"), "--runtime-endpoint", f"unix://{self.socket}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def import_images(self, archives: list[Path]) -> None:
        for archive in archives:
            result = self.ctr("images", "import", "--local", str(archive), timeout=300)
            if result.returncode != 0:
                raise NodeUnavailable(f"ctr images import {archive.name}: {result.stderr.strip()}")

    def images(self) -> list[str]:
        return self.ctr("images", "list", "-q").stdout.split()

    def wait_socket(self, alive: Callable[[], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.socket.exists() and self.ctr("version", timeout=5).returncode == 0:
                return
            if not alive():
                break
            time.sleep(0.05)
        tail = self.containerd_log.read_text(errors="replace")[-2000:]
        raise NodeUnavailable(f"containerd did not answer on {self.socket}\n{tail}")

    # --- cleanup -----------------------------------------------------------------

    def remove_pods(self) -> None:
        """Every pod sandbox stopped and removed (CNI torn down, shims gone),
        while containerd still runs and kubelet no longer does."""
        if self.socket.exists():
            self.crictl("rmp", "--all", "--force", timeout=120)

    def clean(self, saved: dict[str, object]) -> None:
        """After containerd and kubelet have stopped: what they leave behind."""
        self._unmount_below(self.dir)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        if ip("link", "show", self.bridge, check=False).returncode == 0:
            ip("link", "del", self.bridge, check=False)
        for cidr in (POD_RANGE, self.service_range):
            ip("route", "del", "unreachable", cidr, check=False)
        self._remove_kubepods_cgroups()
        for name, value in dict(saved.get("sysctls") or {}).items():  # type: ignore[call-overload]
            with contextlib.suppress(OSError):
                sysctl_path(str(name)).write_text(f"{value}\n")
        for leftover in HARD_CODED_LEFTOVERS:
            shutil.rmtree(leftover, ignore_errors=True)
        for parent in ("/var/lib/kubelet", "/var/lib/cni"):
            with contextlib.suppress(OSError):
                Path(parent).rmdir()  # only if nothing else is left in it
        # containerd's state (snapshots included) is per run, like etcd's data.
        shutil.rmtree(self.dir, ignore_errors=True)

    @staticmethod
    def _unmount_below(root: Path) -> None:
        points = []
        with open("/proc/self/mountinfo") as info:
            for line in info:
                point = line.split()[4].replace("\\040", " ")
                if point == str(root) or point.startswith(f"{root}/"):
                    points.append(point)
        for point in sorted(set(points), key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)

    @staticmethod
    def _remove_kubepods_cgroups() -> None:
        base = Path("/sys/fs/cgroup")
        for hierarchy in base.iterdir() if base.exists() else []:
            top = hierarchy / "kubepods"
            if not top.is_dir():
                continue
            dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
            for cgroup in [*dirs, top]:
                with contextlib.suppress(OSError):
                    cgroup.rmdir()
