"""The judge: an HTTP endpoint that echoes what it received.

A proxy checker needs a server that tells it which address a request came
from and which headers arrived. Third-party judge sites die and rate-limit,
so ``proxyrefresh judge`` serves one. Every answer echoes the caller's
token, so a proxy that fabricates a judge page is caught.
"""

from __future__ import annotations

import asyncio
import json
import signal

from aiohttp import web

from proxyrefresh.worker.wire import TOKEN_PARAM


def echo(request: web.Request) -> dict[str, object]:
    """What the judge saw, as the checker reads it back."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    remote = peer[0] if peer else None
    return {
        "remote_addr": remote,
        "method": request.method,
        "path": request.path,
        "token": request.query.get(TOKEN_PARAM, ""),
        # Keep every occurrence: a proxy may repeat a header.
        "headers": {name: ", ".join(request.headers.getall(name)) for name in request.headers},
    }


async def handle(request: web.Request) -> web.Response:
    return web.Response(
        body=json.dumps(echo(request)).encode(),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok")


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def split_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` or ``[v6]:PORT`` to a (host, port) pair."""
    host, sep, port = listen.rpartition(":")
    if not sep or not (port.isascii() and port.isdecimal()):
        raise ValueError(f"--listen wants HOST:PORT, got {listen!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


async def serve(listen: str, ready: asyncio.Event | None = None) -> None:
    """Serve until SIGTERM/SIGINT; ``ready`` is set once the port is bound."""
    host, port = split_listen(listen)
    runner = web.AppRunner(make_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
