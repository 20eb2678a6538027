"""The one kubectl wrapper of the dev tools: the demo, the dev environment,
the benches and the e2e tests all run kubectl through it."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.harness.cluster import ROOT, binary

CRDS = ("crd/proxyrefreshes.proxyrefresh.dev", "crd/proxypools.proxyrefresh.dev")


@dataclass
class Kubectl:
    """kubectl against the local cluster; in ``namespace`` when one is given."""

    kubeconfig: Path
    namespace: str = ""  # none: cluster-wide commands only

    def argv(self, namespaced: bool = True) -> list[str]:
        """The command line's start, for callers that stream (``-w``)."""
        ns = ["-n", self.namespace] if namespaced and self.namespace else []
        return [binary("kubectl"), "--kubeconfig", str(self.kubeconfig), *ns]

    def __call__(
        self,
        *args: str,
        stdin: str | None = None,
        check: bool = True,
        timeout: float = 120,
        namespaced: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*self.argv(namespaced), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result

    def apply(self, manifest: dict[str, Any] | str) -> None:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        self("apply", "-f", "-", stdin=text)

    def get(self, *what: str) -> dict[str, Any]:
        return dict(json.loads(self("get", *what, "-o", "json").stdout))

    def install_crds(self) -> None:
        """Our CRDs from manifests/, and wait until the API server serves them."""
        self("apply", "-f", str(ROOT / "manifests" / "crd.yaml"), namespaced=False)
        self("wait", "--for=condition=Established", *CRDS, "--timeout=30s", namespaced=False)
        # Established is not yet served: for a moment a list answers 429
        # "storage is (re)initializing", and kopf, started then, backs off for
        # seconds. kubectl waits that out by itself (it honours Retry-After).
        kinds = ",".join(crd.split("/")[1] for crd in CRDS)
        self("get", kinds, "--all-namespaces", "--request-timeout=30s", namespaced=False)
