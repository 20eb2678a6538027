"""The local node's configuration keeps every packet and every pull on this
machine: read from the files it writes, nothing started."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import yaml

from tests.harness.node import Node


def configured(tmp_path: Path) -> Node:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("{}")
    node = Node(tmp_path / "node", tmp_path / "bin", "10.0.0.0/24")
    node.configure(kubeconfig)
    return node


def test_every_registry_is_a_closed_loopback_port(tmp_path: Path) -> None:
    node = configured(tmp_path)
    hosts = tomllib.loads((node.dir / "certs.d" / "_default" / "hosts.toml").read_text())
    assert hosts["server"] == "http://127.0.0.1:1"
    config = tomllib.loads((node.dir / "containerd.toml").read_text())
    plugins = config["plugins"]
    certs = str(node.dir / "certs.d")
    assert plugins["io.containerd.cri.v1.images"]["registry"]["config_path"] == certs
    assert plugins["io.containerd.transfer.v1.local"]["config_path"] == certs
    # The sandbox image is imported under this name, never fetched.
    pinned = plugins["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"]
    assert pinned.startswith("localhost/")
    _, env = node.containerd_args()
    assert env["HTTP_PROXY"] == env["HTTPS_PROXY"] == "http://127.0.0.1:1"
    assert env["NO_PROXY"] == ""


def test_the_bridge_is_never_a_gateway(tmp_path: Path) -> None:
    node = configured(tmp_path)
    (conflist,) = (node.dir / "cni" / "net.d").glob("*.conflist")
    (bridge,) = json.loads(conflist.read_text())["plugins"]
    # The bridge plugin turns IP forwarding on for a gateway; masquerading
    # and routes would give pods a way off the machine.
    assert (bridge["isGateway"], bridge["isDefaultGateway"], bridge["ipMasq"]) == (
        False,
        False,
        False,
    )
    assert "routes" not in bridge["ipam"]


def test_kubelet_listens_on_loopback_and_gives_pods_no_outside_resolver(tmp_path: Path) -> None:
    node = configured(tmp_path)
    config = yaml.safe_load((node.dir / "kubelet.yaml").read_text())
    assert config["address"] == config["healthzBindAddress"] == "127.0.0.1"
    assert config["readOnlyPort"] == 0
    assert Path(config["resolvConf"]).read_text() == "nameserver 127.0.0.1\n"
    # What this machine needs (no CAP_SYS_RESOURCE for root; cgroups v1).
    assert config["failCgroupV1"] is False
    containerd = tomllib.loads((node.dir / "containerd.toml").read_text())
    assert containerd["plugins"]["io.containerd.cri.v1.runtime"]["restrict_oom_score_adj"] is True
