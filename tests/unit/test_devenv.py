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


def test_dev_up_hands_the_operator_what_the_users_redis_needs(tmp_path: Path) -> None:
    """Issue 34: `make dev-up` takes PROXYREFRESH_REDIS_URL in any form; the
    operator's pod gets the CA as text (it cannot read this machine's files)
    and the sentinels' password, and nothing else of the environment."""
    from tests.harness.devenv import redis_env

    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n...\n")
    environ = {
        "PROXYREFRESH_REDIS_URL": "redis+sentinel://127.0.0.1:26379/mymaster",
        "PROXYREFRESH_REDIS_CA_FILE": str(ca),
        "PROXYREFRESH_REDIS_SENTINEL_PASSWORD": "s",
        "HOME": "/root",
    }
    assert redis_env(environ) == {
        "PROXYREFRESH_REDIS_CA_DATA": ca.read_text(),
        "PROXYREFRESH_REDIS_SENTINEL_PASSWORD": "s",
    }
    assert redis_env({"HOME": "/root"}) == {}
