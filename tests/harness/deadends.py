"""Proxies that are not: listeners that accept and never answer, and a
proxy that forges a judge's answer. Run as a process so the checker under
test shares nothing with them.

    python -m tests.harness.deadends blackhole 127.0.0.30 COUNT
    python -m tests.harness.deadends forger 127.0.0.31 1
    python -m tests.harness.deadends slow 127.0.0.45 1 DELAY   # a proxy that works, late

Each listener takes a port the kernel picks; the ports are printed as one
JSON list on stdout once all of them listen.
"""

from __future__ import annotations

import asyncio
import json
import resource
import signal
import sys
from collections.abc import Awaitable, Callable

FORGED = json.dumps(
    {"remote_addr": "203.0.113.77", "headers": {}, "token": "0" * 32, "method": "GET"}
).encode()


async def blackhole(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept, read whatever comes, never answer: a dead proxy that costs a
    client its whole timeout."""
    try:
        while await reader.read(65536):
            pass
    finally:
        writer.close()


async def forger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer any request with a plausible judge page that does not echo
    the caller's token, as a hijacking proxy would."""
    try:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(FORGED)}\r\nConnection: close\r\n\r\n".encode()
            + FORGED
        )
        await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def slow(
    delay: float, egress: str
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """A forwarding HTTP proxy that waits ``delay`` seconds before it passes
    a request on, from its own address (``egress``): a live elite proxy
    whose latency is known."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            method, url, version = head.split("\r\n", 1)[0].split(" ", 2)
            rest = url.split("://", 1)[1]
            authority, _, path = rest.partition("/")
            host, _, port = authority.partition(":")
            await asyncio.sleep(delay)
            up_reader, up_writer = await asyncio.open_connection(
                host, int(port or 80), local_addr=(egress, 0)
            )
            lines = head.split("\r\n")[1:]
            up_writer.write(
                f"{method} /{path} {version}\r\n".encode() + "\r\n".join(lines).encode()
            )
            while data := await up_reader.read(65536):
                writer.write(data)
            await writer.drain()
            up_writer.close()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    return handle


async def main(mode: str, host: str, count: int, delay: float = 0.0) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    handler = {"blackhole": blackhole, "forger": forger, "slow": slow(delay, host)}[mode]
    servers = [await asyncio.start_server(handler, host, 0, backlog=4096) for _ in range(count)]
    ports = [server.sockets[0].getsockname()[1] for server in servers]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(json.dumps(ports), flush=True)
    await stop.wait()
    for server in servers:
        server.close()


if __name__ == "__main__":
    delay = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), delay))
