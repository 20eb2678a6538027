"""The calls by path (the operator, the rotator feed): what one costs when
the API server stalls."""

from __future__ import annotations

import socket
import time

import pytest
import urllib3
from kubernetes import client

from proxyrefresh import kubeapi


@pytest.mark.timeout(30)  # without its timeouts the call would wait forever
def test_an_api_server_that_never_answers_costs_a_timeout_not_a_hang(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A listener that takes the connection and never answers: the call
    fails within its timeouts (the driver then retries the step) instead of
    holding the refresh's phase forever."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        config = client.Configuration()
        config.host = f"http://127.0.0.1:{listener.getsockname()[1]}"
        monkeypatch.setattr(kubeapi, "api_client", lambda: client.ApiClient(config))
        monkeypatch.setattr(kubeapi, "REQUEST_TIMEOUT", (1.0, 0.3))
        started = time.monotonic()
        with pytest.raises(urllib3.exceptions.HTTPError, match="timed out"):
            kubeapi.send("GET", kubeapi.core("default", "configmaps", "pool"))
        assert time.monotonic() - started < 5
