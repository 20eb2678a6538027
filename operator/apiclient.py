"""The operator's calls to the Kubernetes API: aiohttp on kopf's loop.

The kubernetes client is synchronous (each call took a thread) and, once
imported, was 19 MiB of the operator's 75 MiB at rest; kopf imports it for
its own helpers whenever it can. The operator's calls are a dozen REST paths
with JSON bodies (:mod:`proxyrefresh.operator.kube`), so they go through
aiohttp, which kopf runs on already, with the credentials the same login
gives kopf (:func:`login`): a pod's ServiceAccount, else the kubeconfig.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Callable
from typing import Any

import aiohttp
import kopf

from proxyrefresh.kubeconfig import NoKubeconfig

JSON = "application/json"
# Seconds to connect and to wait for an answer: an API server that stalls
# costs a call (the caller retries it), never a wait for ever.
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 30.0


class ApiError(Exception):
    """The API server answered with a status outside 2xx."""

    def __init__(self, status: int, reason: str, body: str) -> None:
        super().__init__(f"({status}) {reason}")
        self.status = status
        self.reason = reason
        self.body = body  # a Status as JSON, as a rule


NO_API = (
    "no Kubernetes API to talk to: not in a pod, and no usable kubeconfig"
    " (set KUBECONFIG or write ~/.kube/config)"
)


def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """kopf's own logins, without a client library: in a pod its
    ServiceAccount, at the address the kubelet gives every pod (kopf's
    assumes the cluster's DNS name); elsewhere ``$KUBECONFIG`` or
    ``~/.kube/config`` (a token, client certificates or a password; not an
    exec plugin)."""
    info = kopf.login_with_service_account(**kwargs)
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    if info is not None and host:
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        host = f"[{host}]" if ":" in host else host
        return dataclasses.replace(info, server=f"https://{host}:{port}")
    if info is not None:
        return info
    return kopf.login_with_kubeconfig(**kwargs)


def can_log_in() -> None:
    """NoKubeconfig, naming the cause, when :func:`login` would find nothing
    (the operator says so in one line and exits, not after kopf's retries)."""
    try:
        info = login(settings=kopf.OperatorSettings())
    except (kopf.LoginError, OSError, LookupError, TypeError, ValueError) as exc:
        raise NoKubeconfig(f"{NO_API}: {exc}") from None
    if info is None:
        raise NoKubeconfig(NO_API)


class ApiClient:
    """One session (its connection pool) for every call of the process,
    made on the loop that first calls. A 401 logs in again once (a pod's
    token is rotated in its file) and repeats the call."""

    def __init__(self, credentials: Callable[[], kopf.ConnectionInfo | None]) -> None:
        self._credentials = credentials
        self._session: aiohttp.ClientSession | None = None
        self._server = ""

    def _open(self) -> aiohttp.ClientSession:
        info = self._credentials()
        if info is None:
            raise NoKubeconfig(NO_API)
        with warnings.catch_warnings():  # kopf's own about basic auth, as kopf does
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="kopf")
            auth = info.as_aiohttp_basic_auth()
        self._server = info.server.rstrip("/")
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=info.as_ssl_context()),
            headers={**info.as_http_headers(), "Accept": JSON, "User-Agent": "proxyrefresh"},
            auth=auth,
            timeout=aiohttp.ClientTimeout(sock_connect=CONNECT_TIMEOUT, sock_read=READ_TIMEOUT),
            trust_env=info.trust_env,
        )

    async def send(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, str] | None = None,
        content_type: str = JSON,
    ) -> dict[str, Any]:
        """One call; the answer as plain JSON, or ApiError."""
        data = None if body is None else json.dumps(body).encode()
        headers = None if body is None else {"Content-Type": content_type}
        status, reason, text = await self._request(method, path, data, headers, query)
        if status == 401:  # a rotated token, say: log in again, once
            await self.close()
            status, reason, text = await self._request(method, path, data, headers, query)
        if not 200 <= status <= 299:
            raise ApiError(status, reason, text)
        return dict(json.loads(text or "{}"))

    async def _request(
        self,
        method: str,
        path: str,
        data: bytes | None,
        headers: dict[str, str] | None,
        query: dict[str, str] | None,
    ) -> tuple[int, str, str]:
        if self._session is None:
            self._session = self._open()
        async with self._session.request(
            method, self._server + path, params=query, data=data, headers=headers
        ) as response:
            text = await response.text(errors="replace")
            return response.status, response.reason or "", text

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
