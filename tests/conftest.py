"""Shared fixtures: real local servers, started once per session.

A missing server program fails the test with what to install; nothing is
skipped.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from proxyrefresh.testing.testbed import LocalProxy, MissingTool, Testbed, standard_set


@dataclass
class Bed:
    testbed: Testbed
    judge: str
    proxies: list[LocalProxy]

    def by_name(self, prefix: str) -> LocalProxy:
        (found,) = [p for p in self.proxies if p.name.startswith(prefix)]
        return found


@pytest.fixture(scope="session")
def bed() -> Iterator[Bed]:
    try:
        with Testbed() as testbed:
            yield Bed(testbed, testbed.judge(), standard_set(testbed))
    except MissingTool as exc:
        pytest.fail(str(exc), pytrace=False)


def run_cli(
    *args: str, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the real console entry point, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "proxyrefresh.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def write_list(tmp_path: Path):  # type: ignore[no-untyped-def]
    def write(*lines: str) -> str:
        path = tmp_path / "list.txt"
        path.write_text("\n".join(lines) + "\n")
        return str(path)

    return write
