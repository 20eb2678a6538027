"""Exit codes of a fan-out pod, shared by the pod and the Job that runs it.

Distinct codes let the Job's podFailurePolicy tell what a retry can fix
from what it cannot (see worker/pod.py for what each means)."""

from __future__ import annotations

EXIT_OK = 0
EXIT_UNAVAILABLE = 3  # a server the kind needs did not answer (a retry may help)
EXIT_CONFIG = 64
EXIT_STATE_LOST = 65
EXIT_REDIS = 69
EXIT_INTERNAL = 70
EXIT_TERMINATED = 143
