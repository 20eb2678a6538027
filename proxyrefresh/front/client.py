"""Code that must block until a refresh is really done, and the
``proxyrefresh create`` used by scheduling CronJobs."""

from __future__ import annotations

import time
from typing import Any

from kubernetes import client, watch
from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError

from proxyrefresh import constants as c
from proxyrefresh.api import true_condition
from proxyrefresh.kubeapi import status_message
from proxyrefresh.kubeconfig import load as load_config

RETRY_SECONDS = 2.0  # after the API server dropped or refused a call
# What a failed API call raises: an answer outside 2xx, or none.
API_ERRORS: tuple[type[Exception], ...] = (ApiException, HTTPError, OSError)


def transient(exc: BaseException) -> bool:
    """An API server that is away (restarting, unreachable, overloaded) and
    may be back: worth another try, unlike a refusal or a bad request."""
    if isinstance(exc, ApiException):
        return exc.status in (0, 429) or (exc.status or 0) >= 500
    return isinstance(exc, (HTTPError, OSError))


class RefreshFailed(RuntimeError):
    """The refresh ended Failed; the message is its condition's."""

    def __init__(self, name: str, status: dict[str, Any]) -> None:
        self.status = status
        cond = true_condition(status, "Failed") or {}
        super().__init__(f"refresh {name} failed: {cond.get('reason')}: {cond.get('message')}")


def wait_for_refresh(
    name: str, namespace: str = "default", timeout: float = 1800
) -> dict[str, Any]:
    """Block until the refresh's condition Complete (the merged pool is
    written) and return its status; raise RefreshFailed or TimeoutError.

    Watches instead of polling, resuming the watch if the server ends it,
    and riding out an API server that goes away (a restart) until the
    deadline; a stalled watch ends within its read timeout."""
    load_config()
    api = client.CustomObjectsApi()
    deadline = time.monotonic() + timeout
    while True:
        try:
            obj = api.get_namespaced_custom_object(c.GROUP, c.VERSION, namespace, c.PLURAL, name)
            status = obj.get("status") or {}
            if true_condition(status, "Complete"):
                return dict(status)
            if true_condition(status, "Failed"):
                raise RefreshFailed(name, status)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"refresh {name} not done after {timeout}s: "
                    f"phase {status.get('phase')}, {status.get('progress')}"
                )
            seconds = max(1, min(int(left), 60))
            stream = watch.Watch().stream(
                api.list_namespaced_custom_object,
                c.GROUP,
                c.VERSION,
                namespace,
                c.PLURAL,
                field_selector=f"metadata.name={name}",
                resource_version=obj["metadata"]["resourceVersion"],
                timeout_seconds=seconds,
                _request_timeout=(10.0, seconds + 15.0),
            )
            for event in stream:
                status = event["object"].get("status") or {}
                if true_condition(status, "Complete") or true_condition(status, "Failed"):
                    break
        except Exception as exc:
            if not transient(exc) or deadline - time.monotonic() < RETRY_SECONDS:
                raise
            time.sleep(RETRY_SECONDS)


def explain(exc: Exception) -> str:
    """An API call's failure in a line: the status and the API server's own
    message (which names the field or the permission), or why there was no
    answer."""
    if isinstance(exc, ApiException):
        detail = status_message(exc)
        return f"the API server answered {exc.status} {exc.reason}" + (
            f": {detail}" if detail else ""
        )
    return f"the API server unavailable: {exc}"


def create_refresh(namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    """Create a ProxyRefresh; ``metadata.generateName`` gives each scheduled
    run its own name."""
    load_config()
    body = {"apiVersion": c.API_VERSION, "kind": c.KIND, **body}
    created = client.CustomObjectsApi().create_namespaced_custom_object(
        c.GROUP, c.VERSION, namespace, c.PLURAL, body
    )
    return dict(created)


def read_pool(namespace: str, name: str) -> dict[str, Any] | None:
    """A ProxyPool, or None if there is none of that name."""
    load_config()
    try:
        found = client.CustomObjectsApi().get_namespaced_custom_object(
            c.GROUP, c.VERSION, namespace, c.POOL_PLURAL, name
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return dict(found)
