"""Where the Kubernetes API is: shared by the operator, the CLI's client
and the rotator feed, so none of them reaches into another's package."""

from __future__ import annotations

from pathlib import Path

# Where a pod's ServiceAccount token says which namespace the pod runs in.
POD_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class NoKubeconfig(RuntimeError):
    """Neither a pod's ServiceAccount nor a usable kubeconfig: one line for
    the user, not the loader's two chained tracebacks."""


def load() -> None:
    """In a pod: its ServiceAccount; elsewhere: KUBECONFIG / ~/.kube/config."""
    from kubernetes import config  # a tenth of a second: only where an API is wanted

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except (config.ConfigException, OSError) as exc:
            raise NoKubeconfig(
                "no Kubernetes API to talk to: not in a pod, and no usable kubeconfig"
                f" (set KUBECONFIG or write ~/.kube/config): {exc}"
            ) from None


def default_namespace() -> str:
    """The namespace a command acts in when ``-n`` is not given, as kubectl
    picks it: the pod's own, else the kubeconfig's current context's, else
    ``default``."""
    try:
        return POD_NAMESPACE_FILE.read_text().strip() or "default"
    except OSError:
        pass
    from kubernetes import config

    try:
        _, current = config.list_kube_config_contexts()
    except (config.ConfigException, OSError, TypeError, KeyError):
        return "default"
    context = (current or {}).get("context") or {}
    return str(context.get("namespace") or "default")
