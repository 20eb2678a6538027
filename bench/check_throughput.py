"""How close ``proxyrefresh check`` gets to the floor set by dead proxies,
and what it costs.

Three cases: N=2,000 at C=512 (2% live), N=10,000 at C=2,048 (1% live),
both T=5 s; and 2,000 live proxies with no dead one. Live proxies are real
pproxy listeners (HTTP and SOCKS5); the dead are half refused, half
black-holed (accept, never answer). A black hole costs a whole timeout T
and at most C checks run at once, so no checker can finish before
``ceil(blackholed / C) * T``: wall / floor is the figure of merit (target
1.05). CPU (user + sys) of each check process comes from the kernel
(wait4), its peak RSS from /proc while it runs (VmHWM); targets are twice the best peer
checker's CPU (0.55 s and 2.0 s) and 150 MiB. Start-up: the best of three
runs of the ``proxyrefresh`` console script on one refused candidate
(target 0.25 s). With no dead proxy, the bed's own processes (one pproxy,
the judge) bound the checking, so their CPU and the floor it sets are
printed beside it.

    .venv/bin/python -m bench.check_throughput [-n N -c C -t T --live-share S]
        [--schemes socks5,http]
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
import timeit
from dataclasses import dataclass
from pathlib import Path

from tests.harness.testbed import PPROXY, Testbed, free_port, wait_for_port


def startup(judge: str, workdir: Path) -> float:
    """Wall time of `proxyrefresh check` on one refused candidate: what the
    process costs before any proxy does (the best of three)."""
    one = workdir / "one.txt"
    one.write_text(f"127.0.0.41:{free_port('127.0.0.41')}\n")
    command = [*CHECK, str(one), "--judge", judge]
    times = []
    for _ in range(3):
        started = time.monotonic()
        subprocess.run(command, capture_output=True, check=False, env=CHECK_ENV)
        times.append(time.monotonic() - started)
    return min(times)


@dataclass(frozen=True)
class Case:
    candidates: int
    concurrency: int
    timeout: float
    live_share: float
    cpu_target: float | None  # seconds, twice the best peer's (the checker issue)

    @property
    def title(self) -> str:
        return f"N={self.candidates}, C={self.concurrency}, T={self.timeout:g}s"


CASES = [
    Case(2000, 512, 5.0, 0.02, 0.55),
    Case(10_000, 2048, 5.0, 0.01, 2.0),
    Case(2000, 512, 5.0, 1.0, None),  # all live: what checking itself costs
]


def bed_floor(runs: list[Run], cores: int, wall: float, cpu: float) -> None:
    """What the bed's own processes spent during each run: every proxied
    check costs the pproxy process and the judge too, so with no dead
    proxy to wait on they bound the checking, whatever the checker costs:
    one process cannot go faster than its CPU time, and all of them share
    the machine's cores."""
    spent = {name: statistics.median(r.bed_cpu[name] for r in runs) for name in runs[0].bed_cpu}
    busiest = max(spent.values())
    shared = (sum(spent.values()) + cpu) / cores  # cpu: the checker's median
    busy = {name: seconds for name, seconds in spent.items() if seconds >= 0.01}  # not idle
    figures = ", ".join(f"{name.split('-')[0]} {seconds:.2f}s" for name, seconds in busy.items())
    print(f"  bed CPU per run   {figures}")
    print(
        f"  bed floor         {max(busiest, shared):.2f}s of the {wall:.2f}s wall: its busiest "
        f"process {busiest:.2f}s; all CPU, the checker's too, over {cores} cores {shared:.2f}s"
    )
    if busiest > CHECKING_TARGET:  # the bed is idle while the checker starts
        print(
            f"  {'':17} so the bed alone puts the target out of reach here, "
            "whatever the checker costs"
        )


def run_case(bed: Testbed, judge: str, case: Case, boot: float) -> bool:
    live_n = max(1, round(case.candidates * case.live_share))
    dead_n = case.candidates - live_n
    refused_n, holes_n = dead_n - dead_n // 2, dead_n // 2
    schemes = [LIVE_SCHEMES[i % len(LIVE_SCHEMES)] for i in range(live_n)]
    live = live_proxies(bed, f"127.0.0.{50 + CASES.index(case)}", schemes)
    refused = [p.url for p in bed.refused(f"127.0.1.{CASES.index(case)}", refused_n)]
    holes = [p.url for p in bed.blackholes(f"127.0.2.{CASES.index(case)}", holes_n)]
    # Interleave so black holes are not all at the end of the list.
    candidates = [url for group in zip(holes, refused, strict=False) for url in group]
    candidates += refused[len(holes) :] + live
    listing = bed.workdir / f"candidates-{CASES.index(case)}.txt"
    listing.write_text("\n".join(candidates) + "\n")
    command = [
        *CHECK,
        str(listing),
        "--judge",
        judge,
        "--timeout",
        str(case.timeout),
        "--concurrency",
        str(case.concurrency),
        "--format",
        "txt",
    ]
    runs = [measure(command, listing, bed) for _ in range(REPEAT)]
    walls = [r.wall for r in runs]
    wall = statistics.median(walls)
    cpu = statistics.median(r.cpu for r in runs)
    rss_mib = statistics.median(r.rss_mib for r in runs)
    spread = f" (median of {REPEAT}: {min(walls):.2f}-{max(walls):.2f}s)"
    ok = all(r.code == 0 for r in runs)
    found, err = runs[-1].printed, runs[-1].stderr
    print(f"\n{case.title}: {live_n} live, {refused_n} refused, {holes_n} black-holed")
    print(f"  live found        {found} of {live_n}")
    if holes_n:
        floor = math.ceil(holes_n / case.concurrency) * case.timeout
        print(
            f"  wall / floor      {wall:.2f}s / {floor:.2f}s = {wall / floor:.3f}  (target <= 1.05)"
        )
    else:
        print(
            f"  checking          {wall - boot:.2f}s (wall less start-up; "
            f"target < {CHECKING_TARGET:g})"
        )
    print(f"  {'':17} {spread.strip()}")
    if not holes_n:
        bed_floor(runs, os.cpu_count() or 1, wall, cpu)
    target = f"; target <= {case.cpu_target:g}s" if case.cpu_target else ""
    per = cpu * 1000 / case.candidates
    print(f"  CPU (user+sys)    {cpu:.2f}s, {per:.2f}s per 1,000 candidates{target}")
    print(f"  peak RSS          {rss_mib:.1f} MiB  (target < 150)")
    print(f"  check summary     {err.strip().splitlines()[0] if err.strip() else '(none)'}")
    ok = ok and found == live_n
    if not ok:
        print(err, file=sys.stderr)
    return ok


def live_proxies(bed: Testbed, ip: str, schemes: list[str]) -> list[str]:
    """One pproxy process on ``ip``, one listener per scheme given: each is a
    distinct live proxy. Their URLs, once all listen."""
    ports: list[int] = []
    while len(ports) < len(schemes):
        port = free_port(ip)
        if port not in ports:
            ports.append(port)
    listeners = [
        arg
        for scheme, port in zip(schemes, ports, strict=True)
        for arg in ("-l", f"{scheme}://{ip}:{port}/@in")
    ]
    proc, log = bed.spawn(f"pproxy-{ip}", [*PPROXY, *listeners])
    for port in ports:
        wait_for_port(ip, port, proc=proc, log=log)
    return [f"{s}://{ip}:{p}" for s, p in zip(schemes, ports, strict=True)]


@dataclass(frozen=True)
class Run:
    wall: float
    cpu: float  # user + sys of the check process (wait4)
    rss_mib: float  # its peak RSS
    code: int
    printed: int  # proxies it wrote out
    stderr: str
    bed_cpu: dict[str, float]  # CPU each of the bed's processes spent meanwhile


def process_cpu(pid: int) -> float:
    """User + sys seconds a running process has spent (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class PeakRss:
    """A process's peak RSS, read from /proc (VmHWM, which only grows) until
    it ends. Not wait4's ru_maxrss: on Linux that counts the image the
    process was started from, this bench's own, whatever the check used."""

    def __init__(self, pid: int) -> None:
        self.path = Path(f"/proc/{pid}/status")
        self.mib = 0.0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._follow, daemon=True)
        self.thread.start()

    def _follow(self) -> None:
        while not self.done.is_set():
            try:
                kib = int(self.path.read_text().split("VmHWM:")[1].split()[0])
            except (OSError, IndexError, ValueError):
                return  # ended (or a zombie: its memory is gone)
            self.mib = max(self.mib, kib / 1024)
            self.done.wait(0.01)

    def stop(self) -> float:
        self.done.set()
        self.thread.join()
        return self.mib


def measure(command: list[str], listing: Path, bed: Testbed) -> Run:
    """One run of the checker, and what the bed's processes spent on it."""
    out_path, err_path = listing.with_suffix(".out"), listing.with_suffix(".err")
    procs = {name: proc.pid for name, proc in bed.procs if proc.poll() is None}
    before = {name: process_cpu(pid) for name, pid in procs.items()}
    with out_path.open("wb") as out_file, err_path.open("wb") as err_file:
        started = time.monotonic()
        check = subprocess.Popen(command, stdout=out_file, stderr=err_file, env=CHECK_ENV)
        peak = PeakRss(check.pid)
        _, status, usage = os.wait4(check.pid, 0)
        wall = time.monotonic() - started
    return Run(
        wall,
        usage.ru_utime + usage.ru_stime,
        peak.stop(),
        os.waitstatus_to_exitcode(status),
        len(out_path.read_text().split()),
        err_path.read_text(),
        {name: process_cpu(pid) - before[name] for name, pid in procs.items()},
    )


REPEAT = 1
CHECKING_TARGET = 0.5  # seconds of checking 2,000 live proxies (the checker issue)
LIVE_SCHEMES = ["socks5", "http"]  # taken in turn by the live proxies
# The console script a user runs, beside this interpreter.
CHECK = [str(Path(sys.executable).with_name("proxyrefresh")), "check"]
# With its bytecode, as an installed wheel has it (pip compiles at install):
# where PYTHONDONTWRITEBYTECODE is set, a checkout would compile every one
# of its modules on every start (about 30 ms of the start-up).
CHECK_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def calibration() -> float:
    """Seconds this interpreter takes for a fixed loop (best of five): the
    machine's speed at the moment, since a shared machine's swings by half
    within an hour and moves every CPU figure with it."""
    loop = "sum(i * i for i in range(10**6))"
    return min(timeit.repeat(loop, number=1, repeat=5))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--candidates", type=int, help="one case of your own instead")
    parser.add_argument("-c", "--concurrency", type=int, default=512)
    parser.add_argument("-t", "--timeout", type=float, default=5.0)
    parser.add_argument("--live-share", type=float, default=0.02)
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (median shown)")
    parser.add_argument(
        "--schemes", default="socks5,http", help="the live proxies' protocols, taken in turn"
    )
    args = parser.parse_args()
    global REPEAT
    REPEAT = args.repeat
    LIVE_SCHEMES[:] = args.schemes.split(",")
    cases = CASES
    if args.candidates:
        cases = [Case(args.candidates, args.concurrency, args.timeout, args.live_share, None)]
        CASES[:] = cases
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the checker inherits it
    print(
        f"calibration       {calibration() * 1000:.1f} ms for a fixed loop (larger: slower machine)"
    )
    with Testbed() as bed:
        judge = bed.judge()
        boot = startup(judge, bed.workdir)
        print(
            f"start-up          {boot:.2f}s, `proxyrefresh check` of one candidate (target < 0.25)"
        )
        ok = all([run_case(bed, judge, case, boot) for case in cases])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
