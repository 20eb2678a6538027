"""The CLI's API calls, as a CronJob or a user sees them fail: the cause
named in one line and an exit code that says which kind, no traceback;
and `create --wait` rides out an API server that restarts."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.rest import ApiException
from kubernetes.config import kube_config

from proxyrefresh.front import client
from tests.conftest import run_cli
from tests.harness.fakeapi import Answer, fake_api, status_body, write_kubeconfig

SPEC = {
    "spec": {
        "pool": "eu",
        "sources": [{"inline": ["http://127.0.0.1:3128"]}],
        "checker": {"judges": ["http://127.0.0.1:8080/"]},
    }
}
FORBIDDEN = (
    'proxyrefreshes.proxyrefresh.dev is forbidden: User "tenant" cannot create resource '
    '"proxyrefreshes" in API group "proxyrefresh.dev" in the namespace "default"'
)


def refused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again: nothing listens there


def cli_env(kubeconfig: Path) -> dict[str, str]:
    """The CLI's environment: this kubeconfig, and not in a pod."""
    return {"KUBECONFIG": str(kubeconfig), "KUBERNETES_SERVICE_HOST": ""}


def test_an_unreachable_api_server_is_exit_69_with_its_address(tmp_path: Path) -> None:
    port = refused_port()
    env = cli_env(write_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{port}"))
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    for args in (["watch", "nightly"], ["create", str(spec)], ["create", "--pool", "eu"]):
        done = run_cli(*args, env=env, timeout=60)
        assert done.returncode == 69, (args, done.stderr)
        assert "the API server unavailable" in done.stderr
        assert f"port={port}" in done.stderr
        assert "Traceback" not in done.stderr


def test_a_refusal_names_the_permission_and_a_rejection_the_field(tmp_path: Path) -> None:
    invalid = 'ProxyRefresh.proxyrefresh.dev "x" is invalid: spec.chunkSize: Invalid value: 0'
    answer: list[Answer] = [(403, status_body(403, "Forbidden", FORBIDDEN))]
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    with fake_api(lambda method, path: answer[0]) as api:
        env = cli_env(api.kubeconfig(tmp_path / "kubeconfig"))
        refused = run_cli("create", str(spec), env=env, timeout=60)
        answer[0] = (422, status_body(422, "Invalid", invalid))
        rejected = run_cli("create", str(spec), env=env, timeout=60)
    assert refused.returncode == 1
    assert f"the API server answered 403 Forbidden: {FORBIDDEN}" in refused.stderr
    assert rejected.returncode == 2
    assert "422 Unprocessable Entity: " + invalid in rejected.stderr
    assert "Traceback" not in refused.stderr + rejected.stderr


@pytest.mark.timeout(60)
def test_waiting_rides_out_an_api_server_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    done: dict[str, Any] = {
        "apiVersion": "proxyrefresh.dev/v1alpha1",
        "kind": "ProxyRefresh",
        "metadata": {"name": "nightly", "namespace": "proxies", "resourceVersion": "9"},
        "status": {
            "phase": "Complete",
            "message": "12 usable",
            "conditions": [{"type": "Complete", "status": "True"}],
        },
    }
    calls: list[str] = []

    def answers(method: str, path: str) -> Answer:
        calls.append(path)
        return None if len(calls) <= 6 else (200, done)  # dropped, then back

    monkeypatch.setattr(client, "RETRY_SECONDS", 0.1)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with fake_api(answers) as api:
        config = str(api.kubeconfig(tmp_path / "kubeconfig"))
        monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", config)
        status = client.wait_for_refresh("nightly", "proxies", timeout=30)
    assert status["message"] == "12 usable"
    assert len(calls) > 6


def test_a_failure_to_call_reads_as_one_line() -> None:
    refusal = ApiException(status=403, reason="Forbidden")
    refusal.body = json.dumps(status_body(403, "Forbidden", FORBIDDEN))
    assert client.explain(refusal) == f"the API server answered 403 Forbidden: {FORBIDDEN}"
    bare = ApiException(status=500, reason="Internal Server Error")
    bare.body = "<html>not a Status</html>"
    assert client.explain(bare) == "the API server answered 500 Internal Server Error"
    assert client.transient(bare)
    assert not client.transient(refusal)
    assert client.transient(ConnectionRefusedError(111, "Connection refused"))


def test_still_running_at_the_timeout_is_exit_75_not_failed(tmp_path: Path) -> None:
    """A wrapper must tell "not done yet" from Failed (1): sysexits' TEMPFAIL."""
    running = {
        "apiVersion": "proxyrefresh.dev/v1alpha1",
        "kind": "ProxyRefresh",
        "metadata": {
            "name": "nightly",
            "namespace": "default",
            "uid": "0123",
            "resourceVersion": "1",
        },
        "status": {"phase": "Processing", "progress": "1/9 (11%)"},
    }
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))

    def answer(method: str, path: str) -> Answer:
        if "watch=" in path:  # a watch that ends with nothing new
            return (200, {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "1"}}})
        if method == "POST":
            return (201, running)
        return (200, running)

    with fake_api(answer) as api:
        env = cli_env(api.kubeconfig(tmp_path / "kubeconfig"))
        watched = run_cli("watch", "nightly", "--timeout", "1", env=env, timeout=60)
        waited = run_cli("create", str(spec), "--wait", "--timeout", "1", env=env, timeout=60)
    assert watched.returncode == 75, watched.stderr
    assert "refresh nightly not done after 1s" in watched.stderr
    assert waited.returncode == 75, waited.stderr
    assert "Traceback" not in watched.stderr + waited.stderr


@pytest.mark.parametrize("args", [["-h"], ["check", "-h"], ["pool", "-h"], ["pool", "stats", "-h"]])
def test_dash_h_is_help_as_everywhere(args: list[str]) -> None:
    """-h prints the help and exits 0, as --help does (issue 32, item 7)."""
    shown = run_cli(*args)
    assert shown.returncode == 0, shown.stderr
    assert "Usage:" in shown.stdout
    assert shown.stdout == run_cli(*args[:-1], "--help").stdout
