"""The operator's own API client (aiohttp, kopf's login, no kubernetes
package): what a call sends and gets, a refusal in one line, a rotated
token, an API server that stalls, and an operator process that never
imports the kubernetes client."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kopf
import pytest

from proxyrefresh.kubeapi import MERGE_PATCH
from proxyrefresh.operator import apiclient, kube
from proxyrefresh.operator.apiclient import ApiClient, ApiError
from tests.harness.fakeapi import FakeApi, fake_api, status_body


def info(server: str, token: str = "t") -> kopf.ConnectionInfo:
    return kopf.ConnectionInfo(server=server, token=token)


@pytest.fixture
async def answered() -> AsyncIterator[FakeApi]:
    def answers(method: str, path: str) -> tuple[int, dict[str, Any]]:
        if path.endswith("/configmaps/gone"):
            return 404, status_body(404, "NotFound", 'configmaps "gone" not found')
        if method == "POST" and path.endswith("/events"):
            return 409, status_body(409, "AlreadyExists", "already there")
        if method == "PATCH":
            return 422, status_body(422, "Invalid", "status.phase: Unsupported value: x")
        return 200, {"kind": "ConfigMap", "data": {"path": path}}

    with fake_api(answers) as api:
        yield api


async def test_calls_go_by_path_with_the_login_token_and_come_back_as_json(
    answered: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = ApiClient(lambda: info(answered.url, "s3cret"))
    monkeypatch.setattr(kube, "API", client)
    try:
        got = await kube.read_config_map("team a", "pool")
        assert got == {
            "kind": "ConfigMap",
            "data": {"path": "/api/v1/namespaces/team%20a/configmaps/pool"},
        }
        assert await kube.read_config_map("a", "gone") is None
        assert await kube.create_event({"metadata": {"namespace": "a"}}) is False
        with pytest.raises(ApiError) as refused:
            await kube.call("PATCH", "/x", {"status": {"phase": "x"}}, content_type=MERGE_PATCH)
        assert kube.permanent(refused.value)
        assert kube.describe(refused.value) == (
            "422 Unprocessable Entity: status.phase: Unsupported value: x"
        )
        assert json.loads(answered.bodies[-1]) == {"status": {"phase": "x"}}
        assert set(answered.authorizations) == {"Bearer s3cret"}
    finally:
        await client.close()


async def test_a_401_logs_in_again_once_and_repeats_the_call() -> None:
    """A pod's token is rotated in its file: the next login reads the new one."""
    tokens = iter(["old", "new", "newer"])

    def answers(method: str, path: str) -> tuple[int, dict[str, Any]]:
        if api.authorizations[-1] == "Bearer old":
            return 401, status_body(401, "Unauthorized", "Unauthorized")
        return 200, {"ok": True}

    with fake_api(answers) as api:
        client = ApiClient(lambda: info(api.url, next(tokens)))
        try:
            assert await client.send("GET", "/api/v1/namespaces") == {"ok": True}
            assert await client.send("GET", "/api/v1/namespaces") == {"ok": True}
            assert api.authorizations == ["Bearer old", "Bearer new", "Bearer new"]
        finally:
            await client.close()


@pytest.mark.timeout(30)  # without its timeouts the call would wait forever
async def test_an_api_server_that_never_answers_costs_a_timeout_not_a_hang(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        monkeypatch.setattr(apiclient, "READ_TIMEOUT", 0.3)
        client = ApiClient(lambda: info(f"http://127.0.0.1:{listener.getsockname()[1]}"))
        started = time.monotonic()
        try:
            with pytest.raises(asyncio.TimeoutError):
                await client.send("GET", "/api/v1/namespaces/default/configmaps/pool")
        finally:
            await client.close()
        assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("host", "server"),
    [("10.96.0.1", "https://10.96.0.1:6443"), ("fd00::1", "https://[fd00::1]:6443")],
)
def test_in_a_pod_the_login_uses_the_address_the_kubelet_gave(
    monkeypatch: pytest.MonkeyPatch, host: str, server: str
) -> None:
    """kopf's own ServiceAccount login assumes the cluster's DNS name; a pod
    is told the API's address (nothing is connected to here)."""
    found = kopf.ConnectionInfo(server="https://kubernetes.default.svc", token="sa")
    monkeypatch.setattr(kopf, "login_with_service_account", lambda **_: found)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    got = apiclient.login(settings=kopf.OperatorSettings())
    assert got is not None
    assert (got.server, got.token) == (server, "sa")


def test_the_operator_process_never_imports_the_kubernetes_client(tmp_path: Path) -> None:
    """kopf would import it (19 MiB) whenever it can; the operator's code
    needs none of it, so its process blocks it (front/cli.py) and still
    loads every handler."""
    code = (
        "import sys; sys.modules['kubernetes'] = None\n"
        "import proxyrefresh.operator.handlers, proxyrefresh.front.cli\n"
        "print(sorted(m for m in sys.modules if m.startswith('kubernetes')))\n"
    )
    env = {**os.environ, "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['kubernetes']"  # the blocked entry, nothing imported
