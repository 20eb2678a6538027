"""The CLI as a first week with it finds it (issue 32, items 2 and 7): one
line per problem, plain text into a pipe, kubectl's ``-n`` and ``-o``
habits, and help that reads as written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from proxyrefresh.api import ProxyRefreshSpec, problems
from proxyrefresh.front import cli
from proxyrefresh.front.output import Format, document, entry_view, table
from proxyrefresh.kubeconfig import default_namespace
from proxyrefresh.pool import PoolEntry
from proxyrefresh.redact import connection_problem
from tests.conftest import run_cli
from tests.harness.fakeapi import Answer, fake_api, status_body, write_kubeconfig

BOX = set("╭╮╰╯│─")


def no_kubeconfig(tmp_path: Path) -> dict[str, str]:
    return {
        "KUBECONFIG": str(tmp_path / "nowhere"),
        "HOME": str(tmp_path),
        "KUBERNETES_SERVICE_HOST": "",
    }


@pytest.mark.parametrize("args", [["watch", "nightly"], ["create", "--pool", "eu"]])
def test_no_kubeconfig_is_one_line_naming_it(tmp_path: Path, args: list[str]) -> None:
    done = run_cli(*args, env=no_kubeconfig(tmp_path))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("proxyrefresh: no Kubernetes API to talk to")
    assert "KUBECONFIG" in line


def test_a_bad_spec_is_one_line_naming_each_field(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "pool: eu\nchunkSize: 0\nsources: [{inline: ['127.0.0.1:1']}]\n"
        "checker: {judges: [not-a-url]}\nbogus: 1\n"
    )
    done = run_cli("create", str(spec), env=no_kubeconfig(tmp_path))
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert line == (
        f"proxyrefresh: {spec}: spec.chunkSize: should be greater than or equal to 1,"
        " or should be 'auto'; spec.checker.judges[0]: should be an http:// or https:// URL;"
        " spec.bogus: is not a field of this resource"
    )
    for noise in ("errors.pydantic.dev", "constrained-int", "literal["):
        assert noise not in line


def test_spec_problems_name_missing_fields_by_their_yaml_path() -> None:
    with pytest.raises(ValidationError) as caught:
        ProxyRefreshSpec.model_validate({"checker": {"judges": []}})
    assert problems(caught.value) == (
        "spec.sources: is required;"
        " spec.checker.judges: should have at least 1 item after validation, not 0"
    )


def test_usage_errors_into_a_pipe_are_plain_text() -> None:
    done = run_cli("create", "--bogus")
    assert done.returncode == 2
    assert "No such option: --bogus" in done.stderr
    assert not BOX & set(done.stderr + done.stdout)
    helped = run_cli("check", "-h")
    assert not BOX & set(helped.stdout)


def test_help_keeps_sentences_whole() -> None:
    """Docstrings are unwrapped: the terminal wraps help, not the source."""
    for group in (cli.app, cli.pool_app):
        for info in group.registered_commands:
            assert info.help, info.callback
            for paragraph in info.help.split("\n\n"):
                assert "\n" not in paragraph, info.help
    shown = run_cli("-h").stdout
    assert "with anonymity,\n" not in shown


def test_shell_completion_is_offered() -> None:
    done = run_cli("--show-completion", "bash")
    assert done.returncode == 0, done.stderr
    assert "_PROXYREFRESH_COMPLETE" in done.stdout


def test_namespace_defaults_to_the_kubeconfig_context(tmp_path: Path) -> None:
    """As kubectl: no -n acts in the current context's namespace."""
    asked: list[str] = []

    def answer(method: str, path: str) -> Answer:
        asked.append(path)
        return (404, status_body(404, "NotFound", "proxypools.proxyrefresh.dev not found"))

    with fake_api(answer) as api:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", api.url, namespace="team")
        env = {"KUBECONFIG": str(kubeconfig), "KUBERNETES_SERVICE_HOST": ""}
        done = run_cli("create", "--pool", "eu", env=env)
    assert done.returncode == 4, done.stderr
    assert "ProxyPool team/eu not found" in done.stderr
    assert any("/namespaces/team/" in path for path in asked), asked


def test_default_namespace_without_a_context_namespace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "k", "http://127.0.0.1:1")))
    assert default_namespace() == "default"
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "nowhere"))
    assert default_namespace() == "default"


def test_output_is_readable_for_people_and_programs() -> None:
    entry = PoolEntry(
        proxy="http://127.0.0.1:1",
        protocol="http",
        host="127.0.0.1",
        port=1,
        anonymity="elite",
        latency_ms=12.3456,
        score=1.1 * 1.1,
        last_checked=1_800_000_000.25,
        last_ok=1_800_000_000.25,
    )
    view = entry_view(entry)
    assert view["score"] == 1.21  # not 1.2100000000000002
    assert view["latency_ms"] == 12.3
    assert view["last_checked"] == "2027-01-15T08:00:00Z"
    assert json.loads(document([view], Format.JSON))[0] == view
    assert document(view, Format.YAML).splitlines()[0] == "proxy: http://127.0.0.1:1"
    header, row = table([view]).splitlines()
    columns = ["PROXY", "PROTOCOL", "ANONYMITY", "LATENCY_MS", "SCORE", "FAILURES", "LAST_OK"]
    assert header.split() == columns
    cells = ["http://127.0.0.1:1", "http", "elite", "12.3", "1.21", "0", "2027-01-15T08:00:00Z"]
    assert row.split() == cells


@pytest.mark.parametrize(
    ("error", "said"),
    [
        ("Error 111 connecting to 127.0.0.1:1. Connection refused.", "cannot connect to"),
        (
            "Error while reading from 127.0.0.1:6379 : (104, Connection reset by peer)",
            "lost the connection to",
        ),
    ],
)
def test_connection_problems_in_words_not_errno(error: str, said: str) -> None:
    text = connection_problem(ConnectionError(error))
    assert text.startswith(said)
    for noise in ("Errno", "111", "104"):
        assert noise not in text
    assert text.endswith(("connection refused", "connection reset by peer"))


def operator_lines(tmp_path: Path, log_format: str, wanted: int = 3) -> list[str]:
    """The operator's first log lines, against an API server that is not there."""
    import os
    import subprocess
    import sys

    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", "http://127.0.0.1:1")
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "KUBERNETES_SERVICE_HOST": "",
        "PROXYREFRESH_REDIS_URL": "redis://127.0.0.1:1",
        "PROXYREFRESH_OPERATOR_LOG_FORMAT": log_format,
        "PROXYREFRESH_OPERATOR_METRICS_PORT": "0",
        "PROXYREFRESH_OPERATOR_LIVENESS_ENDPOINT": "",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxyrefresh.front.cli", "operator"],
        stderr=subprocess.STDOUT,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        return [proc.stdout.readline() for _ in range(wanted)]
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_operator_logs_whole_names_or_json(tmp_path: Path) -> None:
    """Issue 32, item 5: kopf's text format cut logger names at 20
    characters; the JSON format is for log pipelines."""
    text = operator_lines(tmp_path, "text")
    assert any("] kopf.activities.startup [INFO] " in line for line in text), text
    for line in operator_lines(tmp_path, "json"):
        assert json.loads(line)["severity"]


def test_operator_without_a_kubeconfig_says_so_and_exits(tmp_path: Path) -> None:
    done = run_cli("operator", env=no_kubeconfig(tmp_path))
    assert done.returncode == 2
    assert "no Kubernetes API to talk to" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("PROXYREFRESH_OPERATOR_METRICS_PORT", "ninety", "PROXYREFRESH_OPERATOR_METRICS_PORT: "),
        ("PROXYREFRESH_REDIS_CA_FILE", "/ca.pem", "PROXYREFRESH_REDIS_CA_FILE is for a rediss://"),
        ("PROXYREFRESH_NETWORK_ALLOWED", '["nowhere"]', "PROXYREFRESH_NETWORK_ALLOWED: 'nowhere'"),
    ],
)
def test_operator_with_a_bad_variable_names_it_and_exits(
    tmp_path: Path, variable: str, value: str, said: str
) -> None:
    done = run_cli("operator", env={**no_kubeconfig(tmp_path), variable: value})
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert said in line


def test_version_answers_without_loading_the_command_tree() -> None:
    """Issue 35: `proxyrefresh --version` (a probe's question) loads neither
    typer nor pydantic, and says what the full command line says."""
    import subprocess
    import sys

    fast = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "proxyrefresh.front.entry", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = {line.rsplit("|", 1)[-1].strip() for line in fast.stderr.splitlines()}
    assert not {m for m in loaded if m.split(".")[0] in ("typer", "pydantic", "redis")}
    assert fast.stdout == run_cli("--version").stdout == "proxyrefresh 0.1.0\n"
