"""Proxies that are not: listeners that accept and never answer, and a
proxy that forges a judge's answer. Run as a process so the checker under
test shares nothing with them.

    python -m tests.harness.deadends blackhole 127.0.0.30 COUNT
    python -m tests.harness.deadends forger 127.0.0.31 1

Each listener takes a port the kernel picks; the ports are printed as one
JSON list on stdout once all of them listen.
"""

from __future__ import annotations

import asyncio
import json
import resource
import signal
import sys

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


async def main(mode: str, host: str, count: int) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    handler = blackhole if mode == "blackhole" else forger
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
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
