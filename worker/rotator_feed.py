"""``proxyrefresh rotator-feed``: keep a mubeng rotator's proxy file in step
with a pool's ConfigMap.

mubeng's ``-w`` reloads only when its file is written in place (the same
inode), and a ConfigMap volume is updated by swapping a symlink, which it
misses; an empty file would leave it with nothing to rotate. So this watches
the ConfigMap through the API and rewrites the file in place: new content
first, then truncate to its length, so the file is never empty and never
replaced. An empty pool leaves the last good list where it is.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from kubernetes import watch
from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError

from proxyrefresh import kubeapi
from proxyrefresh.kubeconfig import load as load_config

log = logging.getLogger("proxyrefresh.rotator-feed")
RETRY_SECONDS = 2.0  # after the API refused or dropped the watch
# The API server ends each watch after WATCH_SECONDS (quiet ones too), so a
# read that waits longer than REQUEST_TIMEOUT's means a stalled connection: it is
# dropped and watched again instead of waiting for ever.
WATCH_SECONDS = 60
REQUEST_TIMEOUT = (10.0, WATCH_SECONDS + 15.0)


def write_in_place(path: Path, text: str) -> bool:
    """Replace the file's content without replacing the file. Returns False
    (and leaves the file alone) when there is nothing to write."""
    if not text.strip():
        return False
    data = text.encode()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if os.pread(fd, len(data) + 1, 0) == data:
            return False  # unchanged: no write, no reload
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def list_config_maps(namespace: str, **options: Any) -> Any:
    """The ConfigMaps' list as ``Watch.stream`` calls it (``watch``,
    ``field_selector``, ``timeout_seconds``, ``_request_timeout``), by path:
    the generated ``CoreV1Api`` would cost this sidecar about 22 MiB."""
    query = {"watch": "true" if options.get("watch") else "false"}
    if "field_selector" in options:
        query["fieldSelector"] = options["field_selector"]
    if "timeout_seconds" in options:
        query["timeoutSeconds"] = str(options["timeout_seconds"])
    if options.get("resource_version"):
        query["resourceVersion"] = str(options["resource_version"])
    resource = kubeapi.core(namespace, "configmaps")
    return kubeapi.open_stream(resource, query, options.get("_request_timeout", REQUEST_TIMEOUT))


def feed(namespace: str, name: str, key: str, path: Path, once: bool = False) -> None:
    """Follow the ConfigMap for ever (or until the first write, with once).
    An API server that refuses, drops or ends the watch is watched again:
    the file keeps its last list meanwhile, and a restarted API server is
    no reason for the rotator's feed to die."""
    load_config()
    while True:
        try:
            stream = watch.Watch().stream(
                list_config_maps,
                namespace,
                field_selector=f"metadata.name={name}",
                timeout_seconds=WATCH_SECONDS,
                _request_timeout=REQUEST_TIMEOUT,
            )
            for event in stream:
                data = event["object"].get("data") or {}
                if write_in_place(path, data.get(key, "")):
                    lines = data[key].count("\n")
                    log.info("wrote %d proxies from %s/%s to %s", lines, namespace, name, path)
                    if once:
                        return
                elif not (data.get(key) or "").strip():
                    log.warning(
                        "%s/%s has no proxies under %s: keeping the last list", namespace, name, key
                    )
        except ApiException as exc:
            log.warning(
                "watching %s/%s: %s; again in %gs", namespace, name, exc.reason, RETRY_SECONDS
            )
            time.sleep(RETRY_SECONDS)
        except (HTTPError, OSError) as exc:
            log.warning(
                "watching %s/%s: API server unreachable (%s); again in %gs",
                namespace,
                name,
                exc,
                RETRY_SECONDS,
            )
            time.sleep(RETRY_SECONDS)
