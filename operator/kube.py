"""The Kubernetes API calls the control plane makes, off the event loop.

The kubernetes client is synchronous; every call here runs in a thread so
kopf's loop never blocks.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes import client
from kubernetes.client.rest import ApiException

from proxyrefresh import constants as c
from proxyrefresh import redact

T = TypeVar("T")


async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.to_thread(functools.partial(fn, *args, **kwargs))


def not_found(exc: ApiException) -> bool:
    return bool(exc.status == 404)


@functools.cache
def api_client() -> client.ApiClient:
    """One API client, so one connection pool, for every call this process
    makes: the default ``XxxApi()`` builds a new client per call, each with
    a pool of its own and a fresh TLS handshake. Made on first use, after
    kopf's start-up loaded the configuration."""
    return client.ApiClient()


def custom() -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client())


def batch() -> client.BatchV1Api:
    return client.BatchV1Api(api_client())


def core() -> client.CoreV1Api:
    return client.CoreV1Api(api_client())


async def list_refreshes(namespace: str) -> list[dict[str, Any]]:
    result = await call(
        custom().list_namespaced_custom_object, c.GROUP, c.VERSION, namespace, c.PLURAL
    )
    return list(result.get("items", []))


async def get_object(plural: str, namespace: str, name: str) -> dict[str, Any] | None:
    """One of our resources (``plural``: refreshes or pools), or None."""
    return await read_or_none(
        custom().get_namespaced_custom_object, c.GROUP, c.VERSION, namespace, plural, name
    )


async def patch_object_status(
    plural: str, namespace: str, name: str, fields: dict[str, Any]
) -> None:
    await call(
        custom().patch_namespaced_custom_object_status,
        c.GROUP,
        c.VERSION,
        namespace,
        plural,
        name,
        {"status": fields},
    )


async def get_refresh(namespace: str, name: str) -> dict[str, Any] | None:
    return await get_object(c.PLURAL, namespace, name)


async def patch_status(namespace: str, name: str, fields: dict[str, Any]) -> None:
    await patch_object_status(c.PLURAL, namespace, name, fields)


async def delete_refresh(namespace: str, name: str) -> None:
    try:
        await call(
            custom().delete_namespaced_custom_object, c.GROUP, c.VERSION, namespace, c.PLURAL, name
        )
    except ApiException as exc:
        if not not_found(exc):
            raise


async def get_pool(namespace: str, name: str) -> dict[str, Any] | None:
    return await get_object(c.POOL_PLURAL, namespace, name)


async def patch_pool_status(namespace: str, name: str, fields: dict[str, Any]) -> None:
    await patch_object_status(c.POOL_PLURAL, namespace, name, fields)


async def create_refresh(manifest: dict[str, Any]) -> bool:
    """Create the refresh if missing. False when it already existed."""
    namespace = manifest["metadata"]["namespace"]
    return await create_if_missing(
        custom().create_namespaced_custom_object, c.GROUP, c.VERSION, namespace, c.PLURAL, manifest
    )


async def create_if_missing(fn: Callable[..., Any], *args: Any) -> bool:
    """Create; False when it already existed (409): an operator restarted
    after creating it asks again, and that is no error."""
    try:
        await call(fn, *args)
        return True
    except ApiException as exc:
        if exc.status == 409:
            return False
        raise


async def read_or_none(fn: Callable[..., Any], *args: Any) -> dict[str, Any] | None:
    """The object as plain JSON, or None if it does not exist."""
    try:
        obj = await call(fn, *args)
    except ApiException as exc:
        if not_found(exc):
            return None
        raise
    return dict(api_client().sanitize_for_serialization(obj))


async def read_job(namespace: str, name: str) -> dict[str, Any] | None:
    return await read_or_none(batch().read_namespaced_job, name, namespace)


async def create_job(manifest: dict[str, Any]) -> bool:
    """Create the Job if missing. False when it already existed (a restart)."""
    return await create_if_missing(
        batch().create_namespaced_job, manifest["metadata"]["namespace"], manifest
    )


async def delete_job(namespace: str, name: str) -> None:
    try:
        await call(
            batch().delete_namespaced_job,
            name,
            namespace,
            propagation_policy="Background",
        )
    except ApiException as exc:
        if not not_found(exc):
            raise


async def read_config_map(namespace: str, name: str) -> dict[str, Any] | None:
    return await read_or_none(core().read_namespaced_config_map, name, namespace)


async def write_config_map(namespace: str, body: dict[str, Any], exists: bool) -> None:
    """Create, or replace at the resourceVersion in ``body`` (409 if it moved)."""
    api = core()
    if exists:
        await call(api.replace_namespaced_config_map, body["metadata"]["name"], namespace, body)
    else:
        await call(api.create_namespaced_config_map, namespace, body)


async def read_secret(namespace: str, name: str) -> dict[str, Any] | None:
    """The Secret with its data decoded, or None if it does not exist."""
    secret = await read_or_none(core().read_namespaced_secret, name, namespace)
    if secret is not None:
        secret["data"] = {
            k: base64.b64decode(v).decode(errors="replace")
            for k, v in (secret.get("data") or {}).items()
        }
    return secret


async def create_secret(manifest: dict[str, Any]) -> bool:
    """Create the Secret if missing (the operator has no right to read it back)."""
    return await create_if_missing(
        core().create_namespaced_secret, manifest["metadata"]["namespace"], manifest
    )


def permanent(exc: ApiException) -> bool:
    """A 4xx that no retry can fix (409 Conflict and 429 Too Many Requests can)."""
    return exc.status is not None and 400 <= int(exc.status) < 500 and exc.status not in (409, 429)


def describe(exc: ApiException) -> str:
    """``422 Unprocessable Entity: <the API server's message>``: the status
    line and message of the API's answer, never its headers."""
    message = ""
    with contextlib.suppress(ValueError, AttributeError):
        message = str(json.loads(exc.body or "{}").get("message") or "")
    return redact.one_line(f"{exc.status} {exc.reason or ''}: {message}".strip(": "), 400)


async def service_account_exists(namespace: str, name: str) -> bool:
    api = core()
    return await read_or_none(api.read_namespaced_service_account, name, namespace) is not None
