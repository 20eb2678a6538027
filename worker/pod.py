"""``proxyrefresh worker``: the entrypoint of one Indexed Job pod.

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

import asyncio
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

from pydantic import ValidationError
from redis.exceptions import RedisError

from proxyrefresh import redact
from proxyrefresh.fanout.exits import (
    EXIT_CONFIG,
    EXIT_INTERNAL,
    EXIT_NO_JUDGE,
    EXIT_OK,
    EXIT_REDIS,
    EXIT_STATE_LOST,
    EXIT_TERMINATED,
)
from proxyrefresh.fanout.runner import TERMINATED, run_chunk
from proxyrefresh.fanout.store import RunStore, StateLost
from proxyrefresh.models import Proxy
from proxyrefresh.netguard import AddressRefused, NetworkGuard
from proxyrefresh.settings import CheckerSettings, NetworkSettings, RedisSettings, WorkerSettings
from proxyrefresh.worker.native import CheckOptions, NativeChecker, NoJudgeAvailable, require_judges

log = logging.getLogger("proxyrefresh.worker")


class ConfigError(ValueError):
    """The pod's configuration is wrong; no retry will fix it."""


def load_settings() -> tuple[WorkerSettings, CheckerSettings, RedisSettings, NetworkGuard]:
    try:
        worker, checker, redis = WorkerSettings(), CheckerSettings(), RedisSettings()
        guard = NetworkSettings().guard_rule()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'env'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(problems) from None
    if checker.engine != "native":
        raise ConfigError(f"engine {checker.engine!r} is not available in this worker")
    if not checker.judges:
        raise ConfigError("PROXYREFRESH_JUDGES is empty: the checker needs a judge")
    return worker, checker, redis, guard


def proxy_processor(checker: NativeChecker) -> Any:
    """Adapt the proxy checker to the fan-out core's item -> result shape."""

    async def process(items: list[Any]) -> AsyncIterator[tuple[int, dict[str, Any], bool]]:
        proxies: list[Proxy] = []
        positions: list[int] = []
        for pos, item in enumerate(items):
            try:
                proxies.append(Proxy.model_validate(item))
                positions.append(pos)
            except ValidationError as exc:
                yield pos, {"item": item, "alive": False, "error": f"invalid item: {exc}"}, False
        async for local, result in checker.check_stream(proxies):
            yield positions[local], result.model_dump(mode="json"), result.alive

    return process


async def run(started: float) -> int:
    try:
        worker, checker_settings, redis_settings, guard = load_settings()
    except ConfigError as exc:
        log.error("bad configuration: %s", exc)
        return EXIT_CONFIG
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    options = CheckOptions.from_settings(checker_settings, guard)
    redis = redis_settings.client()
    store = RunStore(redis, worker.run_id, redis_settings.key_ttl_seconds)
    index = worker.job_completion_index
    try:
        await options.vet_urls()
        judges = await require_judges(options.judges, options.timeout, options.guard)
        outcome = await run_chunk(
            store,
            index,
            proxy_processor(NativeChecker(options, judges)),
            soft_deadline=worker.soft_deadline_seconds,
            stop=stop,
            progress_interval=worker.progress_interval_seconds,
            started=started,
        )
    except AddressRefused as exc:
        log.error("chunk %s: bad configuration: %s", index, exc)
        return EXIT_CONFIG
    except NoJudgeAvailable as exc:
        log.error("chunk %s: %s", index, exc)
        return EXIT_NO_JUDGE
    except StateLost as exc:
        log.error("chunk %s: %s", index, exc)
        return EXIT_STATE_LOST
    except RedisError as exc:
        where = redact.url(redis_settings.url)
        log.error(
            "chunk %s: Redis at %s unavailable: %s", index, where, redact.secrets_in(str(exc))
        )
        return EXIT_REDIS
    finally:
        await redis.aclose()
    result = outcome.result
    log.info(
        "chunk %s %s: checked %d, live %d, unchecked %d%s",
        index,
        outcome.how,
        result.processed,
        result.succeeded,
        len(result.pending),
        "" if outcome.first_completion or outcome.how == TERMINATED else " (already counted)",
    )
    return EXIT_TERMINATED if outcome.how == TERMINATED else EXIT_OK


def main() -> int:
    started = time.monotonic()
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return asyncio.run(run(started))
    except Exception:
        log.exception("unexpected error")
        return EXIT_INTERNAL
