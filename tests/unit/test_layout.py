"""The folder layout must not shadow the standard library (PRODUCT.md)."""

from __future__ import annotations

import importlib
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_operator_is_the_stdlib() -> None:
    # A bare interpreter (-S: no site, so nothing imports operator early) in
    # the repository root, where operator/ is first on sys.path.
    code = "import operator, sys; print(operator.__file__); print(operator.itemgetter)"
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    for argv in ([sys.executable, "-S", "-c", code], [sys.executable, "-c", code]):
        out = subprocess.run(
            argv, cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.splitlines()
        assert Path(out[0]).resolve().parent == stdlib
        assert "itemgetter" in out[1]


def test_python_dash_m_works_from_the_repository_root() -> None:
    # runpy imports collections, which imports operator: the first thing to
    # break if the folder shadowed the stdlib.
    out = subprocess.run(
        [sys.executable, "-S", "-m", "json.tool"],
        input="{}",
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "{}"


def test_folders_are_subpackages_of_proxyrefresh() -> None:
    for name, folder in (("proxyrefresh.operator", "operator"), ("proxyrefresh.worker", "worker")):
        module = importlib.import_module(name)
        assert [Path(p).resolve() for p in module.__path__] == [(ROOT / folder).resolve()]
    assert importlib.import_module("proxyrefresh.worker.native").__file__ is not None


def test_folders_are_not_top_level_packages() -> None:
    code = "import importlib.util as u; print(u.find_spec('worker'))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd="/", capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "None"


def test_wheel_maps_the_folders_into_the_package(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("proxyrefresh-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert "proxyrefresh/operator/constants.py" in names
    assert "proxyrefresh/worker/native.py" in names
    assert "proxyrefresh/cli.py" in names
    tops = {name.split("/")[0] for name in names}
    assert tops == {"proxyrefresh", f"{wheel.name.split('-py3')[0]}.dist-info"}
