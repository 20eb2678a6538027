"""``rotate --workers N``: several acceptor processes on one port.

A Python process uses one core, and what the rotator spends per request is
its own CPU (bench.rotator --peers). With SO_REUSEPORT every process binds
the same address and the kernel spreads new connections over them. The
first process also serves the API; the others send it their counters once
a second, each over a pipe of its own, so /healthz and /metrics count every
process. Sticky sessions hold across processes (worker/sessions.py); picks
drawn ahead, kept upstream connections and strikes are each process's own.
A worker that dies is started again; one whose first process is gone stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
from collections.abc import Callable, Iterable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any

from proxyrefresh.settings import RedisSettings
from proxyrefresh.worker.rotate_settings import RotatorSettings

if TYPE_CHECKING:
    from proxyrefresh.worker.rotate import Rotator

log = logging.getLogger("proxyrefresh.rotate")
SNAPSHOT_SECONDS = 1.0  # how often a worker sends its counters
RESPAWN_SECONDS = 1.0  # after a worker died, before its successor starts
Address = tuple[str, int]


async def serve(
    pool: str,
    namespace: str,
    settings: RotatorSettings,
    listen: Address,
    api_listen: Address | None = None,
    ready: Callable[[], None] | None = None,
    report_to: Connection | None = None,
    redis_settings: RedisSettings | None = None,
) -> None:
    """One rotator process over ``namespace/pool`` (its Redis: from the environment)."""
    from proxyrefresh.pool import AsyncPool
    from proxyrefresh.worker.rotate import run

    redis_settings = redis_settings or RedisSettings.from_env()
    # A client is waiting: few retries, a short timeout. Requests share a
    # bounded pool and wait their turn for a connection, never failing
    # with "Too many connections" under a burst of clients.
    redis = redis_settings.client(
        retries=1, timeout=2.0, max_connections=redis_settings.max_connections
    )
    try:
        await run(AsyncPool(redis, pool, namespace), settings, listen, api_listen, ready, report_to)
    finally:
        await redis.aclose()


def worker_main(
    pool: str,
    namespace: str,
    settings: RotatorSettings,
    listen: Address,
    report_to: Connection,
    access_level: int,
) -> None:
    """A worker process's life (the target multiprocessing starts)."""
    from proxyrefresh.fanout import aio

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("proxyrefresh.rotate.access").setLevel(access_level)  # as the first's
    aio.run(serve(pool, namespace, settings, listen, report_to=report_to))


async def send_counters(rotator: Rotator, to: Connection, stop: asyncio.Event) -> None:
    """A worker's counters to the first process, once a second, until it is gone."""
    while not stop.is_set():
        try:
            to.send(rotator.snapshot())
        except OSError:  # the first process is gone: so is the reason to serve
            log.warning("the rotator's first process is gone: stopping")
            stop.set()
            return
        await asyncio.sleep(SNAPSHOT_SECONDS)


def summed(snapshots: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Counters of several processes as one."""
    total: dict[str, Any] = {"by_status": {}}
    for snapshot in snapshots:
        for name, value in snapshot.items():
            if name == "by_status":
                for code, count in value.items():
                    total[name][code] = total[name].get(code, 0) + count
            else:
                total[name] = total.get(name, 0) + value
    return total


# What a worker that ended still counts for: its counters, not its gauges.
GAUGES = frozenset({"connections", "sessions", "upstream_connections_idle", "workers"})


def counted(snapshot: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in snapshot.items() if name not in GAUGES}


class Acceptors:
    """The first process's other workers: started, followed, restarted, stopped."""

    def __init__(self, rotator: Rotator, listen: Address) -> None:
        self.rotator, self.listen = rotator, listen
        self._context = multiprocessing.get_context("spawn")  # no loop or thread is copied
        self._workers: dict[int, tuple[BaseProcess, Connection]] = {}
        self._stopping = False

    def start(self, count: int) -> None:
        for slot in range(1, count + 1):
            self._spawn(slot)

    def _spawn(self, slot: int) -> None:
        if self._stopping:
            return
        calls = self.rotator.pool.calls
        receiving, sending = self._context.Pipe(duplex=False)
        access = logging.getLogger("proxyrefresh.rotate.access").getEffectiveLevel()
        args = (calls.name, calls.namespace, self.rotator.settings, self.listen, sending, access)
        process = self._context.Process(
            target=worker_main, args=args, name=f"rotate-{slot}", daemon=True
        )
        process.start()
        sending.close()
        self._workers[slot] = (process, receiving)
        asyncio.get_running_loop().add_reader(receiving.fileno(), self._heard, slot)

    def _heard(self, slot: int) -> None:
        process, receiving = self._workers[slot]
        try:
            self.rotator.others[slot] = receiving.recv()
            return
        except (EOFError, OSError):
            pass
        loop = asyncio.get_running_loop()
        loop.remove_reader(receiving.fileno())
        receiving.close()
        last = self.rotator.others.pop(slot, None)
        if last is not None:  # counters never go back: what it counted stays counted
            self.rotator.retired = summed([self.rotator.retired, counted(last)])
        process.join(timeout=5)
        if not self._stopping:
            log.warning(
                "rotator worker %d ended (exit %s): starting another", slot, process.exitcode
            )
            loop.call_later(RESPAWN_SECONDS, self._spawn, slot)

    async def stop(self) -> None:
        """SIGTERM to every worker (each sends what it still holds), then wait for them."""
        self._stopping = True
        loop = asyncio.get_running_loop()
        for process, receiving in self._workers.values():
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(receiving.fileno())
            if process.is_alive():
                process.terminate()
        await asyncio.to_thread(self._join)

    def _join(self) -> None:
        for process, receiving in self._workers.values():
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()
            receiving.close()
