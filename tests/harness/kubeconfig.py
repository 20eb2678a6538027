"""The local cluster's kubeconfig writer (cluster.py): the admin's, which
kubelet, kube-scheduler and the controller manager use too."""

from __future__ import annotations

import json
from pathlib import Path


def write_kubeconfig(
    path: Path, server: str, ca_data: str, user: str, token: str, namespace: str | None = None
) -> Path:
    """A token kubeconfig for ``server`` (``ca_data``: the CA, base64), only
    readable by its owner, since it holds a bearer token."""
    context: dict[str, str] = {"cluster": "local", "user": user}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "local", "cluster": {"server": server, "certificate-authority-data": ca_data}}
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "local", "context": context}],
        "current-context": "local",
    }
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)
    return path
