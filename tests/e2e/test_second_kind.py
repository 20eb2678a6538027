"""A second resource kind, defined only in tests (tests/e2e/squares), runs end
to end on the local control plane through the same fan-out core: chunks, a
Redis user per run, the Indexed Job skeleton, the pod runtime, results read
back, retries counted once."""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from tests.conftest import wait_for
from tests.e2e.conftest import World
from tests.e2e.squares import kind
from tests.harness.kubectl import Kubectl
from tests.harness.testbed import start_logged

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def controller(world: World, kubectl: Kubectl, tmp_path: Path, **env: str) -> Iterator[Path]:
    """The Square CRD and its controller (a kopf process), for one test;
    yields the controller's log."""
    kubectl.apply(kind.crd())
    kubectl(
        "wait",
        "--for=condition=Established",
        f"crd/{kind.PLURAL}.{kind.GROUP}",
        "--timeout=30s",
        namespaced=False,
    )
    tmp_path.chmod(0o777)  # the pods write the crash marker as UID 65532
    code = squares_code(tmp_path / "code")
    log = world.cluster.logs / f"squares-{kubectl.namespace}.log"
    process = start_logged(
        [
            sys.executable,
            "-m",
            "kopf",
            "run",
            "--standalone",
            "-n",
            kubectl.namespace,
            str(ROOT / "tests" / "e2e" / "squares" / "controller.py"),
        ],
        log,
        env={
            "PATH": "/usr/bin:/bin",
            "KUBECONFIG": str(kubectl.kubeconfig),
            "PYTHONPATH": str(ROOT),
            "SQUARES_REDIS_URL": world.redis.url,
            "SQUARES_CODE": str(code),
            **env,
        },
        cwd=ROOT,
    )
    try:
        yield log
    finally:
        process.terminate()
        process.wait(timeout=30)


def square(name: str, numbers: list[int], chunk_size: int, **spec: object) -> dict[str, object]:
    return {
        "apiVersion": f"{kind.GROUP}/{kind.VERSION}",
        "kind": "Square",
        "metadata": {"name": name},
        "spec": {"numbers": numbers, "chunkSize": chunk_size, **spec},
    }


def test_squares_run_on_the_same_core(world: World, kubectl: Kubectl, tmp_path: Path) -> None:
    crashed = tmp_path / "crashed-once"
    numbers = list(range(1, 11))
    with controller(world, kubectl, tmp_path, SQUARES_CRASH_ONCE=str(crashed)) as log:
        kubectl.apply(square("sq", numbers, 3))
        status = wait_status_of(kubectl, "sq", log)
    assert (status["totalChunks"], status["completedChunks"]) == (4, 4)
    assert (status["processed"], status["succeeded"]) == (10, 10)
    assert status["jobSucceeded"] is True
    squares = json.loads(kubectl.get("configmap", "sq-squares")["data"]["squares"])
    assert squares == [n * n for n in numbers]
    # Index 0 completed, crashed, and was run again: counted once all the same.
    assert crashed.exists()
    (job,) = kubectl.get("jobs", "-l", "app=squares")["items"]
    assert job["status"]["failed"] >= 1
    uid = kubectl.get(kind.PLURAL, "sq")["metadata"]["uid"]
    with Redis.from_url(world.redis.url, decode_responses=True) as redis:
        assert redis.get(f"{kind.PREFIX}:{{{uid}}}:completed_chunks") == "4"
        assert redis.scard(f"{kind.PREFIX}:{{{uid}}}:completed") == 4
        assert not redis.keys(f"proxyrefresh:{{{uid}}}:*")  # its own prefix, not ours


def test_a_square_keeps_its_keys_alive_and_fails_when_redis_loses_them(
    world: World, kubectl: Kubectl, tmp_path: Path
) -> None:
    """Through the core's Run, without code of its own for either: keys
    with a 4 s TTL outlive it while the run is followed, and a run whose
    keys are flushed ends Failed, reason StateLost."""
    ttl = 4
    with controller(world, kubectl, tmp_path, SQUARES_KEY_TTL=str(ttl)) as log:
        kubectl.apply(square("slow", list(range(1, 9)), 4, slowSeconds=4))
        uid = wait_for(
            lambda: kubectl.get(kind.PLURAL, "slow")["metadata"].get("uid"), 30, "the Square"
        )
        chunks = f"{kind.PREFIX}:{{{uid}}}:chunks"  # only the controller renews this one
        with Redis.from_url(world.redis.url, decode_responses=True) as redis:
            wait_for(lambda: redis.exists(chunks), 30, "the chunks to be written")
            written = time.monotonic()
            wait_for(
                lambda: time.monotonic() - written > 2 * ttl,
                3 * ttl,
                "two TTLs to pass while the run goes on",
            )
            assert redis.exists(chunks), "the chunks expired while the run was followed"
            assert 0 < redis.ttl(chunks) <= ttl
            status = kubectl.get(kind.PLURAL, "slow").get("status") or {}
            assert status.get("phase") == "Running", status
            redis.delete(*redis.keys(f"{kind.PREFIX}:{{{uid}}}:*"))  # Redis loses the run

        def failed() -> dict[str, object] | None:
            status = kubectl.get(kind.PLURAL, "slow").get("status") or {}
            return dict(status) if status.get("phase") == "Failed" else None

        try:
            status = wait_for(failed, 30, "the Square to fail")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; controller log:\n{log.read_text()[-3000:]}") from None
    assert status["reason"] == "StateLost"
    assert f"no state for run {uid}" in str(status["message"])
    wait_for(lambda: not kubectl.get("jobs", "-l", "app=squares")["items"], 30, "its Job to go")


def squares_code(into: Path) -> Path:
    """The kind's code, copied where the pods' user (UID 65532) may read it:
    a hostPath mount keeps its directory's own mode, and a checkout may be
    one only root enters (a fresh clone in a mktemp directory is 0700)."""
    squares = Path("tests", "e2e", "squares")
    shutil.copytree(ROOT / squares, into / squares, ignore=shutil.ignore_patterns("__pycache__"))
    for package in squares.parents[:-1]:  # tests/e2e, tests
        shutil.copy(ROOT / package / "__init__.py", into / package / "__init__.py")
    for path in (into, *into.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return into


def wait_status_of(kubectl: Kubectl, name: str, log: Path) -> dict[str, object]:
    def done() -> dict[str, object] | None:
        status = kubectl.get(kind.PLURAL, name).get("status") or {}
        return dict(status) if status.get("phase") == "Done" else None

    try:
        return wait_for(done, 90, f"Square {name} to be Done")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; controller log:\n{log.read_text()[-3000:]}") from None
