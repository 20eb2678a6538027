"""``proxyrefresh worker``: the entrypoint of one Indexed Job pod, the
proxy checker on the fan-out core's pod runtime (``fanout.pod``).

Exit codes are distinct so the Job's podFailurePolicy can tell what a
retry can fix from what it cannot:

  0   the chunk is done (possibly partial after the soft deadline) and counted
  3   no judge answered (retryable: a judge may come back)
  64  bad configuration: retrying cannot help; the Job fails at once
  65  the run's state is not in Redis (lost or expired); the Job fails at once
  69  Redis stayed unavailable through every retry (retryable)
  70  an unexpected error (retryable)
  143 stopped by SIGTERM; what was checked is saved and the retry resumes
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from pydantic import ValidationError

from proxyrefresh.constants import RUNS
from proxyrefresh.fanout.exits import EXIT_CONFIG
from proxyrefresh.fanout.exits import EXIT_UNAVAILABLE as EXIT_NO_JUDGE
from proxyrefresh.fanout.pod import PodFailure, PodRun, run_pod
from proxyrefresh.fanout.pod import main as pod_main
from proxyrefresh.fanout.runner import Processor
from proxyrefresh.fanout.store import ChunkResult
from proxyrefresh.models import Proxy
from proxyrefresh.netguard import AddressRefused, NetworkGuard
from proxyrefresh.settings import (
    CheckerSettings,
    EnvSettings,
    NetworkSettings,
    RedisSettings,
    WorkerSettings,
)
from proxyrefresh.worker.native import CheckOptions, NativeChecker, NoJudgeAvailable, require_judges

log = logging.getLogger("proxyrefresh.worker")


S = TypeVar("S", bound=EnvSettings)


class ConfigError(ValueError):
    """The pod's configuration is wrong; no retry will fix it."""


def load_settings() -> tuple[WorkerSettings, CheckerSettings, RedisSettings, NetworkGuard]:
    problems: list[str] = []

    def read(kind: type[S]) -> S | None:
        try:
            return kind.from_env()
        except ValidationError as exc:
            problems.append(kind.explain(exc))
            return None

    worker, checker, redis, network = (
        read(WorkerSettings),
        read(CheckerSettings),
        read(RedisSettings),
        read(NetworkSettings),
    )
    if worker is None or checker is None or redis is None or network is None:
        raise ConfigError("; ".join(problems))
    guard = network.guard_rule()
    if checker.engine != "native":
        raise ConfigError(f"engine {checker.engine!r} is not available in this worker")
    if not checker.judges:
        raise ConfigError("PROXYREFRESH_JUDGES is empty: the checker needs a judge")
    return worker, checker, redis, guard


def proxy_processor(checker: NativeChecker) -> Processor:
    """Adapt the proxy checker to the fan-out core's item -> result shape."""

    async def process(items: list[Any]) -> AsyncIterator[tuple[int, dict[str, Any], bool]]:
        proxies: list[Proxy] = []
        positions: list[int] = []
        for pos, item in enumerate(items):
            try:
                proxies.append(Proxy.from_item(item))
                positions.append(pos)
            except ValidationError as exc:
                yield pos, {"item": item, "alive": False, "error": f"invalid item: {exc}"}, False
        # Defaults left out: most results are of dead proxies, and this way
        # each is about two thirds the bytes, in Redis and in the merge's memory.
        async for local, result in checker.check_stream(proxies):
            yield (
                positions[local],
                result.model_dump(mode="json", exclude_defaults=True),
                result.alive,
            )

    return process


async def run(started: float) -> int:
    try:
        worker, checker_settings, redis_settings, guard = load_settings()
    except ConfigError as exc:
        log.error("bad configuration: %s", exc)
        return EXIT_CONFIG
    options = CheckOptions.from_settings(checker_settings, guard)

    async def prepare() -> Processor:
        try:
            await options.vet_urls()
            judges = await require_judges(options.judges, options.timeout, options.guard)
        except AddressRefused as exc:
            raise PodFailure(EXIT_CONFIG, f"bad configuration: {exc}") from None
        except NoJudgeAvailable as exc:
            raise PodFailure(EXIT_NO_JUDGE, str(exc)) from None
        return proxy_processor(NativeChecker(options, judges))

    pod = PodRun(
        prefix=RUNS.key_prefix,
        run_id=worker.run_id,
        index=worker.job_completion_index,
        redis_url=redis_settings.url,
        soft_deadline=worker.soft_deadline_seconds,
        progress_interval=worker.progress_interval_seconds,
        ttl=redis_settings.key_ttl_seconds,
        slots=worker.slots,
        slot_wait=worker.chunk_seconds or math.inf,
    )
    return await run_pod(pod, redis_settings.client(), prepare, started, summary)


def summary(result: ChunkResult) -> str:
    """The chunk in the checker's words."""
    return f"checked {result.processed}, live {result.succeeded}, unchecked {len(result.pending)}"


def main() -> int:
    return pod_main(run)
