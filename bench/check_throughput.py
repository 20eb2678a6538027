"""How close ``proxyrefresh check`` gets to the floor set by dead proxies.

N candidates: ~2% live (real pproxy listeners, HTTP and SOCKS5), the rest
dead, half refused, half black-holed (accept, never answer). A black hole
costs a whole timeout T and at most C checks run at once, so no checker can
finish before ``ceil(blackholed / C) * T``; the ratio actual/floor is the
figure of merit (target <= 1.3 at C=512, T=5, N=2000). Peak RSS of the
check process is read from the kernel (wait4), target < 150 MiB.

    .venv/bin/python -m bench.check_throughput [-n 2000] [-c 512] [-t 5]
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.harness.testbed import Testbed, free_port, wait_for_port


def startup(judge: str, workdir: Path) -> float:
    """Wall time of `proxyrefresh check` on one refused candidate: what the
    process costs before any proxy does (the best of three)."""
    one = workdir / "one.txt"
    one.write_text(f"127.0.0.41:{free_port('127.0.0.41')}\n")
    command = [sys.executable, "-m", "proxyrefresh.cli", "check", str(one), "--judge", judge]
    times = []
    for _ in range(3):
        started = time.monotonic()
        subprocess.run(command, capture_output=True, check=False)
        times.append(time.monotonic() - started)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--candidates", type=int, default=2000)
    parser.add_argument("-c", "--concurrency", type=int, default=512)
    parser.add_argument("-t", "--timeout", type=float, default=5.0)
    parser.add_argument("--live-share", type=float, default=0.02)
    args = parser.parse_args()

    live_n = max(1, round(args.candidates * args.live_share))
    dead_n = args.candidates - live_n
    refused_n, holes_n = dead_n - dead_n // 2, dead_n // 2
    with Testbed() as bed:
        judge = bed.judge()
        # One pproxy process, many listeners: each is a distinct live proxy.
        ip = "127.0.0.40"
        ports = [free_port(ip) for _ in range(live_n)]
        schemes = ["http" if i % 2 else "socks5" for i in range(live_n)]
        listeners = [
            arg
            for scheme, port in zip(schemes, ports, strict=True)
            for arg in ("-l", f"{scheme}://{ip}:{port}/@in")
        ]
        proc, log = bed.spawn("pproxy-many", [sys.executable, "-m", "pproxy", *listeners])
        for port in ports:
            wait_for_port(ip, port, proc=proc, log=log)
        live = [f"{s}://{ip}:{p}" for s, p in zip(schemes, ports, strict=True)]
        refused = [p.url for p in bed.refused("127.0.0.41", refused_n)]
        holes = [p.url for p in bed.blackholes("127.0.0.42", holes_n)]
        # Interleave so black holes are not all at the end of the list.
        candidates = [url for group in zip(holes, refused, strict=False) for url in group]
        candidates += refused[len(holes) :] + live
        listing = bed.workdir / "candidates.txt"
        listing.write_text("\n".join(candidates) + "\n")

        command = [
            sys.executable,
            "-m",
            "proxyrefresh.cli",
            "check",
            str(listing),
            "--judge",
            judge,
            "--timeout",
            str(args.timeout),
            "--concurrency",
            str(args.concurrency),
            "--format",
            "txt",
        ]
        started = time.monotonic()
        check = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(check.pid, 0)
        wall = time.monotonic() - started
        out = check.stdout.read().decode() if check.stdout else ""
        err = check.stderr.read().decode() if check.stderr else ""
        found = len(out.split())
        boot = startup(judge, bed.workdir)
    floor = math.ceil(holes_n / args.concurrency) * args.timeout
    rss_mib = usage.ru_maxrss / 1024
    print(
        f"candidates        {args.candidates} (live {live_n}, refused {refused_n}, "
        f"black-holed {holes_n})"
    )
    print(f"timeout T         {args.timeout:g}s, concurrency C {args.concurrency}")
    print(f"live found        {found} of {live_n}")
    print(f"wall time         {wall:.2f}s")
    print(
        f"floor             {floor:.2f}s  (ceil({holes_n}/{args.concurrency}) * {args.timeout:g})"
    )
    cpu = usage.ru_utime + usage.ru_stime
    print(f"ratio             {wall / floor:.3f}  (target <= 1.3; the checker issue's: 1.05)")
    print(f"CPU (user+sys)    {cpu:.2f}s, {cpu * 1000 / args.candidates:.2f}s per 1,000 candidates")
    print(f"peak RSS          {rss_mib:.1f} MiB  (target < 150)")
    print(f"start-up          {boot:.2f}s for one candidate (target < 0.25)")
    print(f"check summary     {err.strip().splitlines()[0] if err.strip() else '(none)'}")
    ok = os.waitstatus_to_exitcode(status) == 0 and found == live_n
    if not ok:
        print(err, file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
