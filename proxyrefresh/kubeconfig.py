"""Where the Kubernetes API is: shared by the operator, the CLI's client
and the rotator feed, so none of them reaches into another's package."""

from __future__ import annotations

from kubernetes import config


def load() -> None:
    """In a pod: its ServiceAccount; elsewhere: KUBECONFIG / ~/.kube/config."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
