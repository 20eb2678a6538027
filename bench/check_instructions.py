"""What one check costs in instructions, per protocol: repeatable where
CPU seconds are not (a shared machine's figures swing by half from one
run to the next).

callgrind counts the instructions (Ir) of ``proxyrefresh check`` on N live
proxies of one protocol, and of the same command on one of them; the
difference over N - 1 is what each further check costs the checker's
process (user space only: the kernel's share of a connection is not in
it). Printed per protocol, with the ratio to an ``http`` check: the
plainest path, the floor a tunnel's handshake adds to.

    .venv/bin/python -m bench.check_instructions [-n 200] [--schemes http,socks5,socks4,https]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

from bench.check_throughput import CHECK, CHECK_ENV, live_proxies
from tests.harness.testbed import Testbed


def instructions(listing: Path, judge: str) -> tuple[int, int]:
    """Instructions of one check run on ``listing``, and proxies it found live."""
    command = [*CHECK, str(listing), "--judge", judge, "--timeout", "30", "--format", "txt"]
    run = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *command],
        capture_output=True,
        text=True,
        env=CHECK_ENV,
        check=False,
    )
    collected = re.search(r"Collected : (\d+)", run.stderr)
    if collected is None:
        raise SystemExit(f"callgrind gave no count:\n{run.stderr[-2000:]}")
    return int(collected.group(1)), len(run.stdout.split())


def per_check(bed: Testbed, judge: str, scheme: str, count: int, ip: str) -> float:
    """Instructions per further check through ``count`` live proxies of
    ``scheme``. pproxy's http listener is a CONNECT proxy too: ``https``
    (a CONNECT tunnel, to the checker) is that listener."""
    listener = "http" if scheme == "https" else scheme
    live = [
        scheme + url.removeprefix(listener) for url in live_proxies(bed, ip, [listener] * count)
    ]
    many, one = bed.workdir / f"{scheme}-all.txt", bed.workdir / f"{scheme}-one.txt"
    many.write_text("\n".join(live) + "\n")
    one.write_text(live[0] + "\n")
    # Once unmeasured: the first run of a fresh checkout compiles its
    # bytecode (as an installed wheel has it already), and must not count.
    subprocess.run([*CHECK, str(one), "--judge", judge], capture_output=True, env=CHECK_ENV)
    base, _ = instructions(one, judge)
    total, found = instructions(many, judge)
    if found != count:
        raise SystemExit(f"{scheme}: {found} of {count} live proxies found live")
    return (total - base) / (count - 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--proxies", type=int, default=200)
    parser.add_argument("--schemes", default="http,socks5,socks4,https")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("bench.check_instructions needs valgrind: apt-get install valgrind", file=sys.stderr)
        return 2
    schemes = args.schemes.split(",")
    with Testbed() as bed:
        judge = bed.judge()
        cost = {
            scheme: per_check(bed, judge, scheme, args.proxies, f"127.0.0.{80 + i}")
            for i, scheme in enumerate(schemes)
        }
    plain = cost.get("http")
    for scheme, ir in cost.items():
        line = f"{scheme:<8} {ir / 1e3:7.0f} k instructions per check (N={args.proxies})"
        if plain and scheme != "http":
            line += f"  {ir / plain:.2f} x the http floor"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
