"""The rotator on loopback: what it adds to a request, how many kept-alive
requests per second pass through it, and what 1,000 open tunnels cost.

- Added latency: the same GET to a local origin through one upstream
  (tinyproxy, elite), once directly and once through ``proxyrefresh rotate``
  over a pool holding only that upstream; a new connection per request
  both ways (the rotator opens one per request to its upstream anyway).
  Target: p50 added under 1 ms.
- Requests/s: clients that keep their connection to the rotator open, each
  sending requests back to back, through the same upstream; the same
  clients straight to the upstream (which closes after each answer) give
  the ratio.
- Tunnels: 1,000 CONNECT tunnels to an echo server through two microsocks
  upstreams, all held open at once, each proven by an echoed byte; the
  rotator's peak RSS. Target: under 150 MiB.

    .venv/bin/python -m bench.rotator [--requests N] [--clients N] [--seconds S] [--tunnels N]
    .venv/bin/python -m bench.rotator --peers [--rounds N] [--seconds S]  (bench/rotator_peers.py)

Run it on a quiet machine, a minute after anything else that made many
connections: tens of thousands of sockets in TIME_WAIT (a previous run
leaves about 28,000) slow every new connection, and the rotator's path
makes two where the direct one makes one (seen here: the direct p50 goes
from 0.6 ms to 2.8 ms, the added p50 from 0.6 ms to 1.1 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

from proxyrefresh.models import Anonymity
from tests.harness import rotator as rot
from tests.harness.testbed import RedisServer, Testbed, free_port

ORIGIN_BODY = b"ok\n"


async def origin(host: str) -> tuple[asyncio.Server, int]:
    """A minimal HTTP/1.1 origin: answers every request with 3 bytes, kept alive."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answer = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n" + ORIGIN_BODY
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client left, or the bench is over (no traceback per connection)
        finally:
            writer.close()

    port = free_port(host)
    return await asyncio.start_server(serve, host, port, backlog=4096), port


async def echo(host: str) -> tuple[asyncio.Server, int]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(4096):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    port = free_port(host)
    return await asyncio.start_server(serve, host, port, backlog=4096), port


async def one_get(proxy: tuple[str, int], url: str) -> float:
    """Seconds for a GET through ``proxy`` on a new connection."""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection(*proxy)
    writer.write(f"GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    await reader.readexactly(len(ORIGIN_BODY))
    took = time.perf_counter() - started
    writer.close()
    return took


async def latencies(
    direct: tuple[str, int], through: tuple[str, int], url: str, n: int
) -> tuple[list[float], list[float]]:
    """Milliseconds per GET, direct and through the rotator, taken in turn so
    the machine's noise falls on both alike."""
    for _ in range(20):  # warm up
        await one_get(direct, url)
        await one_get(through, url)
    pairs = [(await one_get(direct, url), await one_get(through, url)) for _ in range(n)]
    return [d * 1000 for d, _ in pairs], [t * 1000 for _, t in pairs]


async def rate(
    proxy: tuple[str, int], url: str, clients: int, seconds: float, keep_alive: bool
) -> float:
    """Requests per second from ``clients`` sending back to back, each on one
    kept-alive connection or on a new connection per request."""
    request = f"GET {url} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    deadline = time.perf_counter() + seconds
    counts = [0] * clients

    async def client(i: int) -> None:
        if not keep_alive:
            while time.perf_counter() < deadline:
                await one_get(proxy, url)
                counts[i] += 1
            return
        reader, writer = await asyncio.open_connection(*proxy)
        while time.perf_counter() < deadline:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            await reader.readexactly(len(ORIGIN_BODY))
            counts[i] += 1
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    return sum(counts) / (time.perf_counter() - started)


async def tunnels(proxy: tuple[str, int], target: tuple[str, int], n: int) -> list[object]:
    """Open ``n`` tunnels (100 at a time), prove each with an echoed byte, keep them."""
    held: list[object] = []
    gate = asyncio.Semaphore(100)

    async def open_one() -> None:
        async with gate:
            reader, writer = await asyncio.open_connection(*proxy)
            writer.write(f"CONNECT {target[0]}:{target[1]} HTTP/1.1\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"CONNECT through the rotator: {head!r} {await reader.read()!r}")
            writer.write(b"x")
            assert await reader.readexactly(1) == b"x"
            held.append(writer)

    await asyncio.gather(*(open_one() for _ in range(n)))
    return held


def rss_mib(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of ``pid``."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1]


async def main(args: argparse.Namespace) -> None:
    with Testbed() as bed:
        redis = RedisServer(bed)
        upstream = bed.tinyproxy("127.0.0.41", Anonymity.ELITE)
        socks = [bed.microsocks("127.0.0.42"), bed.microsocks("127.0.0.43")]
        await rot.merge_into(redis.url, "bench", "one", [upstream])
        await rot.merge_into(redis.url, "bench", "socks", socks)
        server, port = await origin("127.0.0.40")
        url = f"http://127.0.0.40:{port}/"
        r = rot.start(bed.workdir, redis.url, "one", "bench")
        t = rot.start(bed.workdir, redis.url, "socks", "bench")
        try:
            echo_server, echo_port = await echo("127.0.0.44")
            base = rss_mib(t.proc.pid)[0]
            started = time.perf_counter()
            held = await tunnels(
                ("127.0.0.1", int(t.proxy.rsplit(":", 1)[1])),
                ("127.0.0.44", echo_port),
                args.tunnels,
            )
            took = time.perf_counter() - started
            health = t.health()
            now, peak = rss_mib(t.proc.pid)
            print(f"{len(held)} CONNECT tunnels held at once (opened in {took:.2f} s)")
            print(
                f"  rotator RSS {now:.1f} MiB held, peak {peak:.1f} MiB (target < 150 MiB); "
                f"idle {base:.1f} MiB; open connections {health['connections']}"
            )
            for writer in held:
                writer.close()  # type: ignore[attr-defined]
            echo_server.close()
            up = (upstream.url[7:].split(":")[0], int(upstream.url.rsplit(":", 1)[1]))
            through = ("127.0.0.1", int(r.proxy.rsplit(":", 1)[1]))
            direct, rotated = await latencies(up, through, url, args.requests)
            p50_added = statistics.median(rotated) - statistics.median(direct)
            p99_added = pct(rotated, 99) - pct(direct, 99)
            print(
                f"requests through one tinyproxy upstream, new connection each, n={args.requests}"
            )
            for label, values in (("direct", direct), ("rotator", rotated)):
                p50, p99 = statistics.median(values), pct(values, 99)
                print(f"  {label:<11} p50 {p50:.2f} ms  p99 {p99:.2f} ms")
            print(f"  added       p50 {p50_added:.2f} ms (target < 1 ms)  p99 {p99_added:.2f} ms")
            # tinyproxy closes every client connection after one answer, so
            # direct clients connect per request; the rotator's clients keep
            # theirs (it connects to the upstream per request).
            rps_direct = await rate(up, url, args.clients, args.seconds, keep_alive=False)
            rps_rotated = await rate(through, url, args.clients, args.seconds, keep_alive=True)
            print(f"{args.clients} clients back to back, {args.seconds:g} s")
            print(f"  direct to the upstream (new connection each)  {rps_direct:,.0f} requests/s")
            print(
                f"  through the rotator (kept alive)              {rps_rotated:,.0f} requests/s "
                f"({rps_rotated / rps_direct:.2f} x direct)"
            )
            # Upstreams that keep their connections (SOCKS tunnels to the
            # origin): the rotator reuses them instead of a new tunnel each.
            before = t.health().get("upstream_connections_reused", 0)
            tunneled = ("127.0.0.1", int(t.proxy.rsplit(":", 1)[1]))
            rps_socks = await rate(tunneled, url, args.clients, args.seconds, keep_alive=True)
            reused = t.health().get("upstream_connections_reused", 0) - before
            print(
                f"  through the rotator, two microsocks upstreams  {rps_socks:,.0f} requests/s "
                f"({reused:,} of them on a kept upstream connection)"
            )
        finally:
            r.stop()
            t.stop()
            server.close()


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--tunnels", type=int, default=1000)
    parser.add_argument(
        "--peers",
        action="store_true",
        help="side by side with a Go reference and proxy.py instead (bench/rotator_peers.py)",
    )
    parser.add_argument("--rounds", type=int, default=2, help="with --peers")
    parser.add_argument(
        "--workers", type=int, default=2, help="with --peers: the rotator's acceptor processes"
    )
    args = parser.parse_args()
    if args.peers:
        from bench import rotator_peers

        rotator_peers.main(args.rounds, args.seconds if args.seconds != 3.0 else 10.0, args.workers)
        return
    asyncio.run(main(args))


if __name__ == "__main__":
    cli()
