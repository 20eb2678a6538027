"""`eval "$(make dev-up)"` leaves a shell that has what the README's next
lines use (issue 32, item 9): the cluster, its Redis, and the pinned
kubectl and this checkout's proxyrefresh first on PATH."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.harness.cluster import Cluster, tools_bin
from tests.harness.devenv import exports


def test_the_exports_put_the_pinned_tools_first(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    script = "\n".join([*exports(cluster), "command -v kubectl proxyrefresh", "echo $KUBECONFIG"])
    shell = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    kubectl, proxyrefresh, kubeconfig = shell.stdout.split()
    assert Path(kubectl) == tools_bin() / "kubectl"
    assert Path(proxyrefresh).name == "proxyrefresh"
    assert Path(proxyrefresh).parent.joinpath("python").exists()
    assert kubeconfig == str(cluster.kubeconfig)
