"""The images the local node runs, all made here (hack/image.sh) and
imported into its containerd before use: nothing is ever pulled.

- ``IMAGE``: the project's image, built from the repository's Dockerfile;
- ``TOOLBOX``: busybox and kubectl, for the harness's own tests (pods that
  are not ours); it never ships;
- the pause image, the sandbox of every pod (containerd's setting, node.py).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.harness.node import NodeUnavailable

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "proxyrefresh:dev"  # the name the chart and the operator's default resolve to
TOOLBOX = "localhost/proxyrefresh-toolbox:1"


def build_images() -> list[Path]:
    """The archives to import, built when their inputs changed (hack/image.sh
    caches each by the hash of its inputs)."""
    result = subprocess.run(
        ["bash", str(ROOT / "hack" / "image.sh")],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    if result.returncode != 0:
        raise NodeUnavailable(f"hack/image.sh failed:\n{result.stderr[-3000:]}")
    return [Path(line) for line in result.stdout.split()]
