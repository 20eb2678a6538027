"""Names the control plane and its users share: the API group, the resource,
labels, annotations and the finalizer. One place, so nothing drifts."""

from __future__ import annotations

GROUP = "proxyrefresh.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ProxyRefresh"
PLURAL = "proxyrefreshes"
SINGULAR = "proxyrefresh"
SHORT_NAMES = ["prf"]

FINALIZER = f"{GROUP}/cleanup"

LABEL_NAME = "app.kubernetes.io/name"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_REFRESH = f"{GROUP}/refresh"
LABEL_POOL = f"{GROUP}/pool"
ANNOTATION_MERGED = f"{GROUP}/merged-refreshes"
# A Secret usable as a source's headers opts in and names the hosts they may reach.
LABEL_SOURCE_CREDENTIALS = f"{GROUP}/source-credentials"
ANNOTATION_ALLOWED_HOSTS = f"{GROUP}/allowed-hosts"
MANAGED_BY = "proxyrefresh-operator"

WORKER_CONTAINER = "worker"
REDIS_SECRET_KEY = "url"
