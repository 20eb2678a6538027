"""How long a command takes to start, against the bare interpreter's.

Every worker pod and every CLI call pays its start-up. Targets (issue 35):
`proxyrefresh --version` at most 0.06 s above `python -c pass`, a
one-candidate `check` at most 0.1 s above it. Medians of interleaved runs;
the check's candidate is a refused loopback port and its judge answers on
loopback (nothing leaves the machine).

    .venv/bin/python -m bench.startup [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.harness.testbed import Testbed

ENTRY = [sys.executable, "-m", "proxyrefresh.front.entry"]
TARGETS = {"--version": 0.06, "check (1 candidate)": 0.10}


def seconds(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, capture_output=True, check=False)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with Testbed() as bed, tempfile.TemporaryDirectory() as tmp:
        judge = bed.judge()
        listing = Path(tmp) / "one.txt"
        listing.write_text("127.0.0.1:1\n")
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "--version": [*ENTRY, "--version"],
            "check (1 candidate)": [*ENTRY, "check", str(listing), "--judge", judge],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):  # interleaved: a busy moment costs every command alike
            for name, argv in commands.items():
                times[name].append(seconds(argv))
    bare = statistics.median(times["python -c pass"])
    print(f"python -c pass: median {bare:.3f} s over {args.runs} runs")
    for name, target in TARGETS.items():
        median = statistics.median(times[name])
        above = median - bare
        verdict = "ok" if above <= target else "over"
        print(f"proxyrefresh {name}: median {median:.3f} s, {above:+.3f} s above the bare "
              f"interpreter (target <= +{target:.2f} s: {verdict})")  # fmt: skip


if __name__ == "__main__":
    main()
