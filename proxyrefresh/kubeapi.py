"""Calls to the Kubernetes API by REST path, for every part of the project.

Since kubernetes 37 the generated ``CoreV1Api``/``BatchV1Api`` import a
pydantic model of every kind they name on first use (about 22 MiB and 0.8 s
of CPU) and turn each answer into typed objects we only turned back into
JSON. So the operator, and the rotator feed beside mubeng, call by path
through one shared ``ApiClient`` (its configuration, credentials and
connection pool) and get plain JSON; errors are the same ``ApiException``.
Synchronous, for the CLI and the rotator feed; the path helpers serve the
operator too, which calls through aiohttp (operator/apiclient.py) and never
imports the kubernetes package: it is imported here only on a first call.
"""

from __future__ import annotations

import contextlib
import functools
import json
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from proxyrefresh import constants as c

if TYPE_CHECKING:
    from kubernetes import client

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
# Seconds to connect and to wait for an answer: an API server that stalls
# costs a call (the caller retries it), never a wait for ever.
REQUEST_TIMEOUT = (10.0, 30.0)


@functools.cache
def api_client() -> client.ApiClient:
    """One API client, so one connection pool, for every call this process
    makes: the default ``XxxApi()`` builds a new client per call, each with
    a pool of its own and a fresh TLS handshake. Made on first use, after
    the configuration is loaded (:mod:`proxyrefresh.kubeconfig`)."""
    from kubernetes import client

    return client.ApiClient()


def path(prefix: str, namespace: str, plural: str, *rest: str) -> str:
    """``{prefix}/namespaces/{namespace}/{plural}[/{name}[/{sub}]]``, each
    segment quoted."""
    parts = ["namespaces", namespace, plural, *rest]
    return prefix + "".join("/" + quote(part, safe="") for part in parts)


def ours(namespace: str, plural: str, *rest: str) -> str:
    return path(f"/apis/{c.GROUP}/{c.VERSION}", namespace, plural, *rest)


def core(namespace: str, plural: str, *rest: str) -> str:
    return path("/api/v1", namespace, plural, *rest)


class AnsweredError(Protocol):
    """An API error as either client raises it: its body is the Status."""

    body: Any


def status_message(exc: AnsweredError) -> str:
    """The message of the Status the API server answered with (it names the
    field, the permission or the object), or "" when the body is none."""
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        return str(json.loads(exc.body or "{}").get("message") or "")
    return ""


def _call(
    method: str,
    resource: str,
    body: Any,
    query: dict[str, str] | None,
    content_type: str,
    timeout: tuple[float, float],
) -> Any:
    """The request through the shared client; its answer unread, or
    ApiException, as the generated APIs raise it, for a status outside 2xx."""
    from kubernetes.client.rest import ApiException

    api = api_client()
    headers = {"Accept": JSON}
    if body is not None:
        headers["Content-Type"] = content_type
    request = api.param_serialize(
        method=method,
        resource_path=resource,
        query_params=list((query or {}).items()),
        header_params=headers,
        body=body,
        auth_settings=["BearerToken"],
    )
    response = api.call_api(*request, _request_timeout=timeout)
    if not 200 <= response.status <= 299:
        text = (response.read() or b"").decode("utf-8", errors="replace")
        raise ApiException.from_response(http_resp=response, body=text, data=None)
    return response


def send(
    method: str,
    resource: str,
    body: Any = None,
    query: dict[str, str] | None = None,
    content_type: str = JSON,
) -> dict[str, Any]:
    """One API call; the answer as plain JSON."""
    response = _call(method, resource, body, query, content_type, REQUEST_TIMEOUT)
    return dict(json.loads((response.read() or b"").decode("utf-8", errors="replace") or "{}"))


def open_stream(
    resource: str, query: dict[str, str], timeout: tuple[float, float] = REQUEST_TIMEOUT
) -> Any:
    """A GET whose answer is read as it comes (a watch): the urllib3
    response, unread, as ``kubernetes.watch.Watch`` wants it."""
    return _call("GET", resource, None, query, JSON, timeout).response
