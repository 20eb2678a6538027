"""Names the control plane and its users share: the API group, the resource,
labels, annotations and the finalizer. One place, so nothing drifts."""

from __future__ import annotations

from proxyrefresh.fanout.kind import Kind

GROUP = "proxyrefresh.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ProxyRefresh"
PLURAL = "proxyrefreshes"
SINGULAR = "proxyrefresh"
SHORT_NAMES = ["prf"]

POOL_KIND = "ProxyPool"
POOL_PLURAL = "proxypools"
POOL_SINGULAR = "proxypool"
POOL_SHORT_NAMES = ["ppool"]

FINALIZER = f"{GROUP}/cleanup"

LABEL_NAME = "app.kubernetes.io/name"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_REFRESH = f"{GROUP}/refresh"
LABEL_POOL = f"{GROUP}/pool"
LABEL_REFILL = f"{GROUP}/refill"  # on refreshes a ProxyPool started by itself
ANNOTATION_REFILL_REASON = f"{GROUP}/refill-reason"  # why a ProxyPool started it
ANNOTATION_MERGED = f"{GROUP}/merged-refreshes"
# Set by a newer refresh of the pool with concurrencyPolicy Replace: the
# refresh so marked fails itself (reason Replaced) and stops its Job.
ANNOTATION_REPLACED_BY = f"{GROUP}/replaced-by"
# A Secret usable as a source's headers opts in and names the hosts they may reach.
LABEL_SOURCE_CREDENTIALS = f"{GROUP}/source-credentials"
# A ConfigMap a refresh may read candidates from opts in with this label set
# to "true": the operator reads ConfigMaps its tenants may not, so without it
# a refresh would tell them which exist, their keys, and what they hold.
LABEL_SOURCE_LIST = f"{GROUP}/source-list"
ANNOTATION_ALLOWED_HOSTS = f"{GROUP}/allowed-hosts"
MANAGED_BY = "proxyrefresh-operator"
# Who Events on refreshes and pools come from (kubectl describe's From).
EVENT_COMPONENT = MANAGED_BY

# The pool's ConfigMap export: its data keys.
EXPORT_JSON_KEY = "live_proxies.json"
EXPORT_TXT_KEY = "live_proxies.txt"

WORKER_CONTAINER = "worker"
REDIS_SECRET_KEY = "url"

# The refreshes' runs in Redis: keys ``proxyrefresh:{<uid>}:*`` and one ACL
# user ``proxyrefresh-run-<uid>`` each (fanout.access), for the fan-out core.
RUNS = Kind(key_prefix="proxyrefresh", user_prefix="proxyrefresh-run-")
