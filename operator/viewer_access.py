"""The live page's viewer user, kept by the operator (``viewer_secret``).

``proxyrefresh ui`` wants a user that may only read the pools and the runs'
counters and follow their events (pool_keys.viewer_rules): given the
operator's own URL it could write everywhere. With
PROXYREFRESH_OPERATOR_VIEWER_SECRET (the chart sets it when the page is on)
the operator keeps such a user (kept_users.py), made again within seconds
whenever Redis forgot it, and writes its URL once into that Secret, which
the page's pod reads.
"""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

from proxyrefresh import constants as c
from proxyrefresh.fanout.access import AclUnavailable
from proxyrefresh.operator import kube
from proxyrefresh.operator.apiclient import ApiError
from proxyrefresh.operator.kept_users import INTERVAL, KeptUser
from proxyrefresh.pool_keys import viewer_rules
from proxyrefresh.redact import redis_problem

log = logging.getLogger("proxyrefresh.operator")
VIEWER = KeptUser("proxyrefresh-viewer", "viewer", viewer_rules)


def secret_manifest(namespace: str, name: str, url: str) -> dict[str, object]:
    labels = {c.LABEL_MANAGED_BY: c.MANAGED_BY, c.LABEL_COMPONENT: "ui"}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "type": "Opaque",
        "stringData": {"url": url},
    }


async def keep_forever(redis: Redis, key: str, redis_url: str, secret: str) -> None:
    """Until cancelled: the viewer user, looked for every INTERVAL seconds;
    its Secret (``namespace/name``) written once. What goes wrong is logged
    and tried again: the page says so itself, on its /readyz."""
    namespace, _, name = secret.partition("/")
    written = False
    while True:
        try:
            if await VIEWER.keep(redis, key):
                log.info("made the live page's viewer user")
            if not written:
                await kube.create_secret(
                    secret_manifest(namespace, name, VIEWER.url(redis_url, key))
                )
                written = True
        except RedisError as exc:
            log.warning("the viewer user: Redis: %s", redis_problem(exc))
        except (AclUnavailable, ApiError) as exc:
            log.warning("the viewer user: %s", exc)
        await asyncio.sleep(INTERVAL)
