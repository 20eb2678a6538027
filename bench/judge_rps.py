"""Requests per second the judge (``proxyrefresh judge``) serves.

The judge runs as its real command on loopback; the load comes from wrk
when installed (Debian package wrk), else from an aiohttp client in another
process. Target: > 2,000 req/s on this machine.

    .venv/bin/python -m bench.judge_rps [--seconds 5] [--connections 64]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import time

import aiohttp

from tests.harness.testbed import Testbed

TARGET = 2000


async def aiohttp_load(url: str, seconds: float, connections: int) -> tuple[int, int]:
    """Closed-loop load: ``connections`` keep-alive clients for ``seconds``."""
    done = errors = 0
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as s:

        async def client() -> None:
            nonlocal done, errors
            while time.monotonic() < deadline:
                try:
                    async with s.get(url) as resp:
                        await resp.read()
                        done += resp.status == 200
                except aiohttp.ClientError:
                    errors += 1

        await asyncio.gather(*(client() for _ in range(connections)))
    return done, errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    with Testbed() as bed:
        url = bed.judge() + "?token=0123456789abcdef0123456789abcdef"
        wrk = shutil.which("wrk")
        if wrk:
            out = subprocess.run(
                [wrk, "-t1", f"-c{args.connections}", f"-d{int(args.seconds)}s", url],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            match = re.search(r"Requests/sec:\s+([\d.]+)", out)
            rps = float(match.group(1)) if match else 0.0
            errors_line = next((ln for ln in out.splitlines() if "errors" in ln), "none")
            tool = "wrk"
        else:
            started = time.monotonic()
            done, errors = asyncio.run(aiohttp_load(url, args.seconds, args.connections))
            rps = done / (time.monotonic() - started)
            errors_line = str(errors)
            tool = "aiohttp client (install wrk for a lighter load generator)"
    print(f"load generator    {tool}, {args.connections} connections, {args.seconds:g}s")
    print(f"judge throughput  {rps:,.0f} req/s  (target > {TARGET:,}; ratio {rps / TARGET:.2f})")
    print(f"errors            {errors_line.strip()}")
    return 0 if rps > TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
