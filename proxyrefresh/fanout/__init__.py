"""The fan-out core: chunks of work in Redis, one Indexed Job pod per chunk,
progress, completion and results. It knows nothing of what its items are:
a second resource kind sits on it unchanged (tests/e2e/squares is one;
docs/fanout.md shows it whole). These names are what a kind needs:

- its names in Redis: :class:`Kind`;
- the control side of a run: :class:`Run` (store, grant, follow with
  keep-alive and lost state, revoke, cleanup), :func:`indexed_job`,
  :func:`worker_secret`, :func:`secret_env`, :func:`job_end`, :func:`chunked`;
- the pod side: :func:`run_pod`, :class:`PodRun`, :class:`PodFailure`,
  :func:`pod_main`, a :data:`Processor`, and the exit codes.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from proxyrefresh.fanout.control import Run
    from proxyrefresh.fanout.exits import (
        EXIT_CONFIG,
        EXIT_INTERNAL,
        EXIT_OK,
        EXIT_REDIS,
        EXIT_STATE_LOST,
        EXIT_TERMINATED,
    )
    from proxyrefresh.fanout.job import JobEnd, indexed_job, job_end, secret_env, worker_secret
    from proxyrefresh.fanout.kind import Kind
    from proxyrefresh.fanout.pod import PodFailure, PodRun, run_pod
    from proxyrefresh.fanout.pod import main as pod_main
    from proxyrefresh.fanout.runner import Processor
    from proxyrefresh.fanout.store import (
        ChunkResult,
        ItemOutcome,
        Progress,
        RunStore,
        StateLost,
        chunked,
    )

# Where each public name lives, imported on first use: a submodule (the
# exit codes, the event loop) must not pay for redis and pydantic.
_HOMES = {
    **dict.fromkeys(
        ("EXIT_CONFIG", "EXIT_INTERNAL", "EXIT_OK", "EXIT_REDIS", "EXIT_STATE_LOST",
         "EXIT_TERMINATED"),
        "exits",
    ),
    **dict.fromkeys(("JobEnd", "indexed_job", "job_end", "secret_env", "worker_secret"), "job"),
    **dict.fromkeys(
        ("ChunkResult", "ItemOutcome", "Progress", "RunStore", "StateLost", "chunked"), "store"
    ),
    **dict.fromkeys(("PodFailure", "PodRun", "run_pod"), "pod"),
    "Kind": "kind",
    "Run": "control",
    "Processor": "runner",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name == "pod_main":
        return importlib.import_module("proxyrefresh.fanout.pod").main
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"proxyrefresh.fanout.{_HOMES[name]}"), name)


__all__ = [
    "EXIT_CONFIG",
    "EXIT_INTERNAL",
    "EXIT_OK",
    "EXIT_REDIS",
    "EXIT_STATE_LOST",
    "EXIT_TERMINATED",
    "ChunkResult",
    "ItemOutcome",
    "JobEnd",
    "Kind",
    "PodFailure",
    "PodRun",
    "Processor",
    "Progress",
    "Run",
    "RunStore",
    "StateLost",
    "chunked",
    "indexed_job",
    "job_end",
    "pod_main",
    "run_pod",
    "secret_env",
    "worker_secret",
]
