"""The Kubernetes API calls the control plane makes, by their REST path.

Every call goes through the process's one :class:`ApiClient` (aiohttp on
kopf's loop, logged in as kopf is: operator/apiclient.py); an answer outside
2xx is an :class:`ApiError` with the API server's status and message.
"""

from __future__ import annotations

import base64
from contextvars import ContextVar
from typing import Any

import kopf

from proxyrefresh import constants as c
from proxyrefresh import redact
from proxyrefresh.kubeapi import MERGE_PATCH, core, ours, path, status_message
from proxyrefresh.operator.apiclient import ApiClient, ApiError, login

# The process's client: one session, so one connection pool, for every call.
# It logs in on its first call, as kopf does, and again after a 401.
API = ApiClient(lambda: login(settings=kopf.OperatorSettings()))


def not_found(exc: ApiError) -> bool:
    return bool(exc.status == 404)


def jobs(namespace: str, *rest: str) -> str:
    return path("/apis/batch/v1", namespace, "jobs", *rest)


async def call(method: str, resource: str, body: Any = None, **options: Any) -> dict[str, Any]:
    """One call (``options``: its query and content_type)."""
    return await API.send(method, resource, body, **options)


async def list_refreshes(namespace: str) -> list[dict[str, Any]]:
    result = await call("GET", ours(namespace, c.PLURAL))
    return list(result.get("items", []))


async def get_object(plural: str, namespace: str, name: str) -> dict[str, Any] | None:
    """One of our resources (``plural``: refreshes or pools), or None."""
    return await read_or_none(ours(namespace, plural, name))


# One writer per object: the (plural, namespace, name) whose status the task
# running here may write. Each object's own daemon says so when it starts
# (operator/driver.py, operator/pools.py); the task's context carries it into
# everything the daemon awaits, and no other task has it.
WRITER: ContextVar[tuple[str, str, str] | None] = ContextVar("status_writer", default=None)


class NotTheWriter(RuntimeError):
    """A status write from a handler that does not own the object: a bug."""


def writes(plural: str, namespace: str, name: str) -> None:
    """This task (a daemon) owns the status of the object named."""
    WRITER.set((plural, namespace, name))


async def patch_object_status(
    plural: str, namespace: str, name: str, fields: dict[str, Any]
) -> None:
    """The one way a status is written; only by the object's own daemon."""
    owner = WRITER.get()
    if owner != (plural, namespace, name):
        raise NotTheWriter(
            f"{plural} {namespace}/{name}: status written by "
            f"{'/'.join(owner) if owner else 'no daemon'}, not by its own"
        )
    resource = ours(namespace, plural, name, "status")
    await call("PATCH", resource, {"status": fields}, content_type=MERGE_PATCH)


async def get_refresh(namespace: str, name: str) -> dict[str, Any] | None:
    return await get_object(c.PLURAL, namespace, name)


async def patch_status(namespace: str, name: str, fields: dict[str, Any]) -> None:
    await patch_object_status(c.PLURAL, namespace, name, fields)


async def annotate_refresh(
    namespace: str, name: str, uid: str, annotations: dict[str, str]
) -> None:
    """Annotate the refresh of that uid (its metadata: never its status); a
    refresh deleted meanwhile, or made again under its name, is left alone."""
    patch = {"metadata": {"uid": uid, "annotations": annotations}}
    try:
        await call("PATCH", ours(namespace, c.PLURAL, name), patch, content_type=MERGE_PATCH)
    except ApiError as exc:
        if exc.status not in (404, 409):  # gone, or another object's uid
            raise


async def delete_refresh(namespace: str, name: str) -> None:
    await delete_if_present(ours(namespace, c.PLURAL, name))


async def get_pool(namespace: str, name: str) -> dict[str, Any] | None:
    return await get_object(c.POOL_PLURAL, namespace, name)


async def patch_pool_status(namespace: str, name: str, fields: dict[str, Any]) -> None:
    await patch_object_status(c.POOL_PLURAL, namespace, name, fields)


async def create_refresh(manifest: dict[str, Any]) -> bool:
    """Create the refresh if missing. False when it already existed."""
    return await create_if_missing(ours(manifest["metadata"]["namespace"], c.PLURAL), manifest)


async def create_event(manifest: dict[str, Any]) -> bool:
    """Post an Event by its own name; False when it was already posted."""
    return await create_if_missing(core(manifest["metadata"]["namespace"], "events"), manifest)


async def create_if_missing(collection: str, manifest: dict[str, Any]) -> bool:
    """Create; False when it already existed (409): an operator restarted
    after creating it asks again, and that is no error."""
    try:
        await call("POST", collection, manifest)
        return True
    except ApiError as exc:
        if exc.status == 409:
            return False
        raise


async def read_or_none(resource: str) -> dict[str, Any] | None:
    """The object as plain JSON, or None if it does not exist."""
    try:
        return await call("GET", resource)
    except ApiError as exc:
        if not_found(exc):
            return None
        raise


async def delete_if_present(resource: str, query: dict[str, str] | None = None) -> None:
    try:
        await call("DELETE", resource, query=query)
    except ApiError as exc:
        if not not_found(exc):
            raise


async def read_job(namespace: str, name: str) -> dict[str, Any] | None:
    return await read_or_none(jobs(namespace, name))


async def create_job(manifest: dict[str, Any]) -> bool:
    """Create the Job if missing. False when it already existed (a restart)."""
    return await create_if_missing(jobs(manifest["metadata"]["namespace"]), manifest)


async def delete_job(namespace: str, name: str) -> None:
    """Delete the Job and, behind it, its pods."""
    await delete_if_present(jobs(namespace, name), {"propagationPolicy": "Background"})


async def read_config_map(namespace: str, name: str) -> dict[str, Any] | None:
    return await read_or_none(core(namespace, "configmaps", name))


async def write_config_map(namespace: str, body: dict[str, Any], exists: bool) -> None:
    """Create, or replace at the resourceVersion in ``body`` (409 if it moved)."""
    if exists:
        await call("PUT", core(namespace, "configmaps", body["metadata"]["name"]), body)
    else:
        await call("POST", core(namespace, "configmaps"), body)


async def read_secret(namespace: str, name: str) -> dict[str, Any] | None:
    """The Secret with its data decoded, or None if it does not exist."""
    secret = await read_or_none(core(namespace, "secrets", name))
    if secret is not None:
        secret["data"] = {
            k: base64.b64decode(v).decode(errors="replace")
            for k, v in (secret.get("data") or {}).items()
        }
    return secret


async def create_secret(manifest: dict[str, Any]) -> bool:
    """Create the Secret if missing (the operator has no right to read it back)."""
    return await create_if_missing(core(manifest["metadata"]["namespace"], "secrets"), manifest)


def permanent(exc: ApiError) -> bool:
    """A 4xx that no retry can fix (409 Conflict and 429 Too Many Requests can)."""
    return exc.status is not None and 400 <= int(exc.status) < 500 and exc.status not in (409, 429)


def describe(exc: ApiError) -> str:
    """``422 Unprocessable Entity: <the API server's message>``: the status
    line and message of the API's answer, never its headers."""
    message = status_message(exc)
    return redact.one_line(f"{exc.status} {exc.reason or ''}: {message}".strip(": "), 400)


async def service_account_exists(namespace: str, name: str) -> bool:
    return await read_or_none(core(namespace, "serviceaccounts", name)) is not None
