"""What CPython reaches as a forward proxy with none of the rotator's work.

A measuring stick for ``python -m bench.rotator --peers``, never a product:
uvloop protocols, requests passed to the next of the upstreams in turn over
kept connections, answers framed by Content-Length only, no parsing of
fields, no filters, picks, reports, retries or timeouts. Its figures on the
bed are the floor under what any CPython rotator could do there; the
rotator's distance from it is the cost of what the rotator does per request.

    python -m bench.relay_floor HOST:PORT UPSTREAM_URL... [--workers N]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import socket
from collections.abc import Iterator
from typing import cast
from urllib.parse import urlsplit

import uvloop

Upstream = tuple[str, int]
HEAD_END = b"\r\n\r\n"


class Floor:
    """The upstreams in turn, and the idle connections to each."""

    def __init__(self, upstreams: list[Upstream]) -> None:
        self.turns: Iterator[Upstream] = itertools.cycle(upstreams)
        self.idle: dict[Upstream, list[UpstreamSide]] = {u: [] for u in upstreams}


class UpstreamSide(asyncio.Protocol):
    def __init__(self, floor: Floor, upstream: Upstream) -> None:
        self.floor, self.upstream = floor, upstream
        self.transport: asyncio.Transport | None = None
        self.client: ClientSide | None = None
        self.head = b""
        self.left = -1  # bytes of the answer still to pass on (-1: its head is not in)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def ask(self, client: ClientSide, request: bytes) -> None:
        assert self.transport is not None
        self.client = client
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is None:
            return
        if self.left < 0:
            self.head += data
            end = self.head.find(HEAD_END)
            if end < 0:
                return
            length = 0
            for line in self.head[:end].split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            data, self.head, self.left = self.head, b"", end + len(HEAD_END) + length
        client.write(data)
        self.left -= len(data)
        if self.left <= 0:
            self.left, self.client = -1, None
            self.floor.idle[self.upstream].append(self)
            client.answered()

    def connection_lost(self, exc: Exception | None) -> None:
        idle = self.floor.idle[self.upstream]
        if self in idle:
            idle.remove(self)
        if self.client is not None:
            self.client.close()


class ClientSide(asyncio.Protocol):
    def __init__(self, floor: Floor) -> None:
        self.floor = floor
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.busy = False
        self.connecting: asyncio.Future[None] | None = None  # a new upstream connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._next()

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def answered(self) -> None:
        self.busy = False
        self._next()

    def _next(self) -> None:
        end = self.buffer.find(HEAD_END)
        if self.busy or end < 0:
            return
        request, self.buffer = self.buffer[: end + len(HEAD_END)], self.buffer[end + 4 :]
        self.busy = True
        upstream = next(self.floor.turns)
        idle = self.floor.idle[upstream]
        if idle:
            idle.pop().ask(self, request)
        else:
            self.connecting = asyncio.ensure_future(self._connect(upstream, request))

    async def _connect(self, upstream: Upstream, request: bytes) -> None:
        loop = asyncio.get_running_loop()
        _, side = await loop.create_connection(
            lambda: UpstreamSide(self.floor, upstream), *upstream
        )
        side.ask(self, request)


def serve(listen: Upstream, upstreams: list[Upstream]) -> None:
    """Serve until SIGTERM (SO_REUSEPORT: every process on the port does)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(listen)
    sock.listen(1024)
    floor = Floor(upstreams)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        loop = runner.get_loop()
        runner.run(loop.create_server(lambda: ClientSide(floor), sock=sock))
        loop.add_signal_handler(signal.SIGTERM, loop.stop)
        loop.run_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("listen", help="HOST:PORT")
    parser.add_argument("upstreams", nargs="+", help="http://HOST:PORT of each upstream")
    parser.add_argument("--workers", type=int, default=2, help="processes on the port")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    upstreams = []
    for url in args.upstreams:
        parts = urlsplit(url)
        if parts.hostname is None or parts.port is None:
            parser.error(f"not http://HOST:PORT: {url}")
        upstreams.append((parts.hostname, parts.port))
    children: list[int] = []
    for _ in range(args.workers - 1):
        child = os.fork()
        if child == 0:
            children.clear()  # a child starts none of its own
            break
        children.append(child)
    try:
        serve((host, int(port)), upstreams)
    finally:
        for child in children:  # they go with the first (the bench stops only it)
            os.kill(child, signal.SIGTERM)
            os.waitpid(child, 0)


if __name__ == "__main__":
    main()
