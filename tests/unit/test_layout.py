"""The folder layout must not shadow the standard library (PRODUCT.md)."""

from __future__ import annotations

import ast
import importlib
import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml

import proxyrefresh
from proxyrefresh.fanout.exits import EXIT_CONFIG

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
    assert wheel.name.split("-")[1] == proxyrefresh.__version__  # pyproject reads it there
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert "proxyrefresh/operator/reconcile.py" in names
    assert "proxyrefresh/worker/native.py" in names
    assert "proxyrefresh/front/cli.py" in names
    tops = {name.split("/")[0] for name in names}
    assert tops == {"proxyrefresh", f"{wheel.name.split('-py3')[0]}.dist-info"}
    # Only what a user runs: no local control plane, node, testbed or demo.
    tooling = [n for n in names if "testing" in n or "harness" in n or "podrunner" in n]
    assert tooling == []
    assert not [n for n in names if n.endswith(("testbed.py", "demo.py", "devenv.py"))]


# Which package may import which: the control plane (operator/) decides, the
# data plane (worker/) checks proxies; both depend on the core, never on each
# other; the core depends on neither; the fan-out core knows nothing of
# proxies; the front doors (proxyrefresh/front/: the CLI, the API client,
# watch, the page) may import anything, and nothing imports them.
FRONT = ("proxyrefresh.front",)
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "core": ("proxyrefresh.operator", "proxyrefresh.worker", *FRONT),
    "operator": ("proxyrefresh.worker", *FRONT),
    "worker": ("proxyrefresh.operator", *FRONT),
    "fanout": (
        "proxyrefresh.operator",
        "proxyrefresh.worker",
        "proxyrefresh.models",
        "proxyrefresh.parse",
        "proxyrefresh.api",
        *FRONT,
    ),
    "front": (),
}


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (lazy imports too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def layer_of(path: Path) -> str:
    relative = path.relative_to(ROOT).as_posix()
    for wing in ("fanout", "front"):
        if relative.startswith(f"proxyrefresh/{wing}/"):
            return wing
    return relative.split("/")[0].replace("proxyrefresh", "core")


def test_imports_point_the_right_way() -> None:
    files = [
        *(ROOT / "proxyrefresh").glob("*.py"),
        *(ROOT / "proxyrefresh" / "fanout").glob("*.py"),
        *(ROOT / "proxyrefresh" / "front").glob("*.py"),
        *(ROOT / "operator").glob("*.py"),
        *(ROOT / "worker").glob("*.py"),
    ]
    assert len(files) > 30
    wrong = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in files
        for module in sorted(imported_modules(path))
        for banned in FORBIDDEN[layer_of(path)]
        if module == banned or module.startswith(banned + ".")
    ]
    assert wrong == []


def test_the_import_check_catches_a_wrong_import(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("def f() -> None:\n    from proxyrefresh.worker import native\n")
    assert "proxyrefresh.worker.native" in imported_modules(probe)


PROXY_WORDS = re.compile(
    r"\b(prox(y|ies)|judges?|anonymity|anonymous|elite|socks[45]?|live|checked|unchecked|checker)\b",
    re.IGNORECASE,
)


def test_the_fanout_core_speaks_of_items_not_proxies() -> None:
    files = sorted((ROOT / "proxyrefresh" / "fanout").glob("*.py"))
    assert len(files) >= 6
    said = [
        f"{path.name}:{number}: {line.strip()}"
        for path in files
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if PROXY_WORDS.search(line.replace("proxyrefresh", ""))  # the product's name is fine
    ]
    assert said == []
    assert PROXY_WORDS.search("counts live proxies")  # the check can fail


def product_names_in(path: Path) -> list[str]:
    """String constants in ``path`` that carry the product's name (a key
    prefix, a user name, a variable, a logger), docstrings and module paths
    (``proxyrefresh.fanout...``) aside."""
    tree = ast.parse(path.read_text(), str(path))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        f"{path.name}:{node.lineno}: {node.value[:60]!r}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
        and "proxyrefresh" in node.value.lower().replace("proxyrefresh.fanout", "")
    ]


def test_the_fanout_core_carries_no_name_of_the_product(tmp_path: Path) -> None:
    """Its keys, users and variables are named by the kind (fanout.kind.Kind,
    indexed_job's slots_env): a second kind shares nothing of ours."""
    files = sorted((ROOT / "proxyrefresh" / "fanout").glob("*.py"))
    assert [name for path in files for name in product_names_in(path)] == []
    probe = tmp_path / "probe.py"
    probe.write_text('"""proxyrefresh in a docstring is fine."""\nPREFIX = "proxyrefresh-run-"\n')
    assert product_names_in(probe) == ["probe.py:2: 'proxyrefresh-run-'"]


def run_entry(
    argv: list[str], before: str = "", report: str = "exc.code"
) -> subprocess.CompletedProcess[str]:
    """``proxyrefresh ARGV`` through the entry point in a fresh interpreter,
    without the PROXYREFRESH_* environment: ``before`` runs first, and
    ``report`` is printed once the command exits (``exc``: its SystemExit)."""
    probe = (
        f"import sys\n{before}"
        f"sys.argv = ['proxyrefresh', *{argv!r}]\n"
        "from proxyrefresh.front import entry\n"
        "try:\n"
        "    entry.main()\n"
        "except SystemExit as exc:\n"
        f"    print({report})\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXYREFRESH_")}
    env.pop("JOB_COMPLETION_INDEX", None)
    return subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, env=env
    )


def test_the_cli_prints_the_version_the_chart_installs() -> None:
    """An image's CLI, its wheel and its chart name one version: the chart's
    appVersion is what `proxyrefresh --version` prints (exit 0)."""
    chart = yaml.safe_load((ROOT / "charts" / "proxyrefresh" / "Chart.yaml").read_text())
    out = run_entry(["--version"])
    assert out.stdout.splitlines() == [f"proxyrefresh {chart['appVersion']}", "0"], out.stderr


def test_a_pod_runs_the_worker_without_the_cli_framework() -> None:
    """`proxyrefresh worker`, every Job pod's command, goes to the worker
    without importing typer (a tenth of a pod's start-up CPU); here it stops
    at its configuration check, with the worker's own exit code and message."""
    result = run_entry(["worker"], report="exc.code, 'typer' in sys.modules")
    assert result.stdout.split() == [str(EXIT_CONFIG), "False"], result.stderr
    assert "bad configuration" in result.stderr


@pytest.mark.parametrize(
    ("argv", "module", "function", "code"),
    [
        (["judge", "--listen", "nowhere"], "proxyrefresh.worker.judge", "split_listen", 2),
        (["worker"], "proxyrefresh.worker.pod", "load_settings", EXIT_CONFIG),
    ],
)
def test_a_command_runs_with_the_collector_on_and_its_start_up_frozen(
    argv: list[str], module: str, function: str, code: int
) -> None:
    """The entry point pauses garbage collection while the command's modules
    load: the command itself (here a judge or a pod, stopped at their
    configuration check) must run with it on again, or a long-running one
    would never free a cycle."""
    spy = (
        "import gc, importlib\n"
        f"target = importlib.import_module({module!r})\n"
        f"real = target.{function}\n"
        "def spy(*args):\n"
        "    print(gc.isenabled(), gc.get_freeze_count() > 0)\n"
        "    return real(*args)\n"
        f"target.{function} = spy\n"
    )
    result = run_entry(argv, before=spy)
    assert result.stdout.split() == ["True", "True", str(code)], result.stderr


def test_check_and_the_worker_start_without_the_control_planes_libraries() -> None:
    """`proxyrefresh check` and a pod import what checking needs: not kopf,
    not the Kubernetes client (the operator's), not aiohttp (the judge's and
    the scraper's), not rich unless a terminal wants a bar, not python-socks'
    tunnel messages until a tunnel is opened."""
    probe = (
        "import sys, runpy\n"
        "import proxyrefresh.front.cli, proxyrefresh.worker.check_command\n"
        "import proxyrefresh.kubeconfig  # every command's main() names its error\n"
        "import proxyrefresh.worker.pod\n"
        "heavy = ('kopf', 'kubernetes', 'aiohttp', 'rich.progress', 'python_socks._protocols')\n"
        "print(sorted({m for m in sys.modules if m.startswith(heavy)}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.strip() == "[]", result.stdout


def test_the_make_targets_keep_the_cluster_where_proxyrefresh_cluster_dir_says() -> None:
    """A second user of the machine sets PROXYREFRESH_CLUSTER_DIR and does
    not land in the checkout's shared cluster (issue 32, item 9)."""
    for target in ("dev-up", "dev-down", "cluster-up", "cluster-down"):
        env = {**os.environ, "PROXYREFRESH_CLUSTER_DIR": "/tmp/alice-cluster"}
        dry = subprocess.run(["make", "-n", target], env=env, capture_output=True, text=True,
                             cwd=ROOT, check=True)  # fmt: skip
        assert "--dir /tmp/alice-cluster" in dry.stdout, (target, dry.stdout)
        env.pop("PROXYREFRESH_CLUSTER_DIR")
        dry = subprocess.run(["make", "-n", target], env=env, capture_output=True, text=True,
                             cwd=ROOT, check=True)  # fmt: skip
        assert f"--dir {ROOT}/.cluster" in dry.stdout, (target, dry.stdout)


MAX_FUNCTION_LINES = 60
LINKS = {("proxyrefresh", "operator"), ("proxyrefresh", "worker")}


def long_functions(path: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """Functions and methods in ``path`` longer than ``limit`` lines, from
    ``def`` to their last line (decorators aside)."""
    tree = ast.parse(path.read_text(), str(path))
    return [
        f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name}:"
        f"{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > limit
    ]


def test_no_function_is_longer_than_60_lines() -> None:
    # Everything that ships: the core, the fan-out core and both planes;
    # tests/ and bench/ may be as long as their scenarios are.
    files = [
        *(ROOT / "proxyrefresh").rglob("*.py"),
        *(ROOT / "operator").rglob("*.py"),
        *(ROOT / "worker").rglob("*.py"),
    ]
    # proxyrefresh/operator and proxyrefresh/worker are the symlinks to the two planes.
    shipped = [p for p in files if p.relative_to(ROOT).parts[:2] not in LINKS]
    assert len(shipped) > 60
    assert [line for path in sorted(shipped) for line in long_functions(path)] == []


def test_the_length_check_catches_a_long_function(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    body = "".join(f"        x{i} = {i}\n" for i in range(59))
    probe.write_text(f"class C:\n    async def long(self) -> None:\n{body}        return\n")
    assert long_functions(probe) == ["probe.py:2 long (61 lines)"]
    assert long_functions(probe, limit=61) == []


def test_the_second_kind_uses_only_the_fanout_cores_public_names() -> None:
    """tests/e2e/squares is a whole kind on the fan-out core: from the
    product it imports ``proxyrefresh.fanout`` alone, never a module inside."""
    squares = sorted((ROOT / "tests" / "e2e" / "squares").glob("*.py"))
    assert len(squares) >= 3
    used = {
        module
        for path in squares
        for module in imported_modules(path)
        if module.startswith("proxyrefresh")
    }
    assert used, "the kind imports nothing of the core"
    assert {m for m in used if not m.startswith("proxyrefresh.fanout")} == set()
    # `from proxyrefresh.fanout import Run` names proxyrefresh.fanout.Run: a
    # public name; a module would be proxyrefresh.fanout.<module>.<name>.
    import proxyrefresh.fanout as fanout

    inside = {m for m in used if m.count(".") > 2 or m.split(".")[-1] not in fanout.__all__}
    assert inside <= {"proxyrefresh.fanout"}, inside
