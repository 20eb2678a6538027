"""What one check costs in instructions, per protocol and for the dead:
repeatable where CPU seconds are not (a shared machine's figures swing by
half from one run to the next).

callgrind counts the instructions (Ir) of ``proxyrefresh check`` on N
candidates of one kind, and of the same command on one of them; the
difference over N - 1 is what each further check costs the checker's
process (user space only: the kernel's share of a connection is not in
it). Printed per live protocol, with the ratio to an ``http`` check (the
plainest path, the floor a tunnel's handshake adds to), then for refused
and black-holed candidates (most of a real list), then the run on one
candidate: the start-up, which every run and every Job pod pays once.

    .venv/bin/python -m bench.check_instructions [-n 200] [--schemes http,socks5,socks4,https]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.check_throughput import CHECK, CHECK_ENV, live_proxies
from tests.harness.testbed import Testbed


def instructions(listing: Path, judge: str, timeout: float = 30) -> tuple[int, int]:
    """Instructions of one check run on ``listing``, and proxies it found live."""
    options = ["--judge", judge, "--timeout", f"{timeout:g}", "--format", "txt"]
    run = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            *CHECK,
            str(listing),
            *options,
        ],
        capture_output=True,
        text=True,
        env=CHECK_ENV,
        check=False,
    )
    collected = re.search(r"Collected : (\d+)", run.stderr)
    if collected is None:
        raise SystemExit(f"callgrind gave no count:\n{run.stderr[-2000:]}")
    return int(collected.group(1)), len(run.stdout.split())


@dataclass(frozen=True)
class Cost:
    per_check: float  # instructions each further candidate adds
    one: int  # instructions of the run on one of them


def cost(
    bed: Testbed, judge: str, kind: str, urls: list[str], alive: bool, timeout: float = 30
) -> Cost:
    """What ``urls`` (all live, or all dead) cost: per further check, and
    the run on the first of them alone."""
    many, one = bed.workdir / f"{kind}-all.txt", bed.workdir / f"{kind}-one.txt"
    many.write_text("\n".join(urls) + "\n")
    one.write_text(urls[0] + "\n")
    # Once unmeasured: the first run of a fresh checkout compiles its
    # bytecode (as an installed wheel has it already), and must not count.
    subprocess.run([*CHECK, str(one), "--judge", judge], capture_output=True, env=CHECK_ENV)
    base, _ = instructions(one, judge, timeout)
    total, found = instructions(many, judge, timeout)
    expected = len(urls) if alive else 0
    if found != expected:
        raise SystemExit(f"{kind}: {found} of {len(urls)} found live, not {expected}")
    return Cost((total - base) / (len(urls) - 1), base)


def live(bed: Testbed, scheme: str, count: int, ip: str) -> list[str]:
    """``count`` live proxies of ``scheme``. pproxy's http listener is a
    CONNECT proxy too: ``https`` (a CONNECT tunnel, to the checker) is that
    listener."""
    listener = "http" if scheme == "https" else scheme
    return [
        scheme + url.removeprefix(listener) for url in live_proxies(bed, ip, [listener] * count)
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--proxies", type=int, default=200)
    parser.add_argument("--schemes", default="http,socks5,socks4,https")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("bench.check_instructions needs valgrind: apt-get install valgrind", file=sys.stderr)
        return 2
    schemes = args.schemes.split(",")
    n = args.proxies
    with Testbed() as bed:
        judge = bed.judge()
        costs = {
            scheme: cost(bed, judge, scheme, live(bed, scheme, n, f"127.0.0.{80 + i}"), True)
            for i, scheme in enumerate(schemes)
        }
        # A dead candidate's check is over at once or at its timeout:
        # a short one keeps the black holes' runs short.
        dead = {
            "refused": [p.url for p in bed.refused("127.0.0.90", n)],
            "black hole": [p.url for p in bed.blackholes("127.0.0.91", n)],
        }
        for kind, urls in dead.items():
            costs[kind] = cost(bed, judge, kind.replace(" ", "-"), urls, False, timeout=2)
    plain = costs["http"].per_check if "http" in costs else None
    for kind, found in costs.items():
        line = f"{kind:<10} {found.per_check / 1e3:7.0f} k instructions per check (N={n})"
        if plain and kind in schemes and kind != "http":
            line += f"  {found.per_check / plain:.2f} x the http floor"
        print(line)
    first_kind, first = next(iter(costs.items()))
    print(f"start-up   {first.one / 1e6:7.0f} M instructions: one {first_kind} candidate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
