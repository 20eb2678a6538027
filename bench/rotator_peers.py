"""``python -m bench.rotator --peers``: the rotator beside its peers.

Three forward proxies that each send a request through the next of the same
upstreams, on the same bed, driven by the same load generator:

- ``proxyrefresh rotate`` over a pool of the upstreams (its Redis's CPU is
  counted with it);
- a Go reference: elazarl/goproxy (the library mubeng is built on) with
  net/http's Transport picking the next upstream per request and keeping
  connections to each alive (``bench/goref``, built here from its module);
- proxy.py with its ProxyPoolPlugin (from PyPI, in a virtualenv of its own);
- the CPython floor (``bench/relay_floor.py``): uvloop protocols passing
  each request to the next upstream and nothing else, on as many processes
  as the rotator: what any CPython rotator could reach on this bed.

The bed: 8 upstream forward proxies and one origin, all goref (Go, so
neither is the bottleneck), on loopback; the origin is asked for by the name
``localhost``, since proxy.py's pool plugin sends a request for an IP
address that is private (all of loopback is) past its upstreams. The load:
wrk (Debian's), kept-alive clients sending ``GET http://localhost:PORT/``
back to back, at 16 and 64 clients;
the tools take turns within each round, so the machine's noise falls on all
alike. Per tool and client count: requests/s, p50 and p99 latency, errors
(non-2xx answers and socket errors), CPU seconds per 1,000 requests (the
proxy's whole process tree) and its RSS after the runs. Last, one line:
``rotator vs go reference at 64 clients: req/s ratio R, p50 ratio P``
(target R >= 1.0, P <= 1.0), medians over the rounds.

Tools it needs: wrk (``apt-get install wrk``) and Go (for goref); proxy.py
is installed into ``$PROXYREFRESH_CACHE/proxypy-VERSION``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from proxyrefresh.models import Anonymity
from tests.harness import rotator as rot
from tests.harness.testbed import (
    LocalProxy,
    RedisServer,
    Testbed,
    free_port,
    wait_for_port,
)

GOREF = Path(__file__).parent / "goref"
PROXYPY_VERSION = "2.4.10"
UPSTREAMS = 8
CLIENTS = (16, 64)
TICKS = os.sysconf("SC_CLK_TCK")


def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "proxyrefresh"
    return Path(os.environ.get("PROXYREFRESH_CACHE", default))


def missing(what: str, how: str) -> SystemExit:
    return SystemExit(f"bench.rotator --peers: {what} is missing; {how}")


def goref_binary() -> Path:
    """goref, built from bench/goref once per change of its source."""
    source = b"".join((GOREF / n).read_bytes() for n in ("main.go", "go.mod", "go.sum"))
    stamp = hashlib.sha256(source).hexdigest()[:16]
    binary = cache_dir() / "bin" / f"goref-{stamp}"
    if binary.exists():
        return binary
    if shutil.which("go") is None:
        raise missing("Go", "install Go >= 1.24 to build bench/goref")
    print(f"building goref into {binary} ...", file=sys.stderr)
    binary.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["go", "build", "-o", str(binary), "."], cwd=GOREF, check=True)
    return binary


def proxypy() -> Path:
    """proxy.py's command, in a virtualenv of its own (a bench peer, not ours to ship)."""
    venv = cache_dir() / f"proxypy-{PROXYPY_VERSION}"
    command = venv / "bin" / "proxy"
    if not command.exists():
        print(f"installing proxy.py {PROXYPY_VERSION} into {venv} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, f"proxy.py=={PROXYPY_VERSION}"], check=True)
    return command


@dataclass
class Run:
    """One wrk run through one tool."""

    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_per_1000: float


@dataclass
class Tool:
    name: str
    address: tuple[str, int]
    pids: Callable[[], list[int]]  # whose CPU and memory count as the tool's
    runs: dict[int, list[Run]] = field(default_factory=dict)
    rss_mib: float = 0.0


def descendants(pid: int) -> list[int]:
    """``pid`` and every process under it."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        ppid = int(text.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with_times = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        total += int(with_times[11]) + int(with_times[12])  # utime, stime
    return total / TICKS


def rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_wrk(out: str) -> tuple[int, float, float, int]:
    """(requests, p50 ms, p99 ms, errors) from ``wrk --latency``'s report."""

    def percentile(p: str) -> float:
        found = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if found is None:
            raise RuntimeError(f"wrk gave no {p}th percentile:\n{out}")
        return float(found[1]) * UNITS[found[2]]

    total = re.search(r"^\s+(\d+) requests in", out, re.M)
    if total is None:
        raise RuntimeError(f"wrk gave no request count:\n{out}")
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(non_2xx[1]) if non_2xx else 0
    return int(total[1]), percentile("50"), percentile("99"), errors


def wrk(tool: Tool, origin: str, clients: int, seconds: float, workdir: Path) -> Run:
    script = workdir / "through-proxy.lua"
    script.write_text(f'wrk.path = "{origin}"\nwrk.headers["Host"] = "{origin[7:-1]}"\n')
    host, port = tool.address
    pids = tool.pids()
    cpu_before = cpu_seconds(pids)
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{clients}",
            f"-d{seconds:g}s",
            "--latency",
            "-s",
            str(script),
            f"http://{host}:{port}/",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    used = cpu_seconds(pids) - cpu_before
    requests, p50, p99, errors = parse_wrk(out)
    return Run(requests / seconds, p50, p99, errors, used / max(requests, 1) * 1000)


@contextmanager
def bed_of_upstreams(bed: Testbed, goref: Path) -> Iterator[tuple[str, list[LocalProxy]]]:
    """The origin's URL and the upstream proxies, all goref on loopback."""
    origin_port = free_port("127.0.0.1")
    proc, log = bed.spawn("goref-origin", [str(goref), "origin", f"127.0.0.1:{origin_port}"])
    wait_for_port("127.0.0.1", origin_port, proc=proc, log=log)
    upstreams = []
    for i in range(UPSTREAMS):
        ip = f"127.0.0.{61 + i}"
        port = free_port(ip)
        proc, log = bed.spawn(f"goref-upstream-{i}", [str(goref), "upstream", f"{ip}:{port}"])
        wait_for_port(ip, port, proc=proc, log=log)
        upstreams.append(LocalProxy(f"goref-{i}", f"http://{ip}:{port}", Anonymity.TRANSPARENT))
    # By name: proxy.py's pool plugin sends a request for a private address
    # (127.0.0.0/8 is one) straight to it, past every upstream.
    yield f"http://localhost:{origin_port}/", upstreams


def start_tools(
    bed: Testbed, goref: Path, upstreams: list[LocalProxy], redis: RedisServer, workers: int
) -> tuple[list[Tool], Callable[[], None]]:
    """The three proxies, listening; and how to stop the one the bed does not own."""
    asyncio.run(rot.merge_into(redis.url, "bench", "peers", upstreams))
    ours = rot.start(bed.workdir, redis.url, "peers", "bench", "--workers", str(workers))
    ours_port = int(ours.proxy.rsplit(":", 1)[1])
    assert redis.proc is not None
    redis_pid = redis.proc.pid
    name = f"proxyrefresh rotate x{workers}"
    tools = [Tool(name, ("127.0.0.1", ours_port), lambda: [*descendants(ours.proc.pid), redis_pid])]
    go_port = free_port("127.0.0.1")
    urls = [p.url for p in upstreams]
    go, log = bed.spawn("goref-rotate", [str(goref), "rotate", f"127.0.0.1:{go_port}", *urls])
    wait_for_port("127.0.0.1", go_port, proc=go, log=log)
    tools.append(Tool("go reference (goproxy)", ("127.0.0.1", go_port), lambda: [go.pid]))
    pp_port = free_port("127.0.0.1")
    pool = [a for p in upstreams for a in ("--proxy-pool", p.url.removeprefix("http://"))]
    pp, log = bed.spawn(
        "proxypy",
        [
            str(proxypy()),
            "--hostname",
            "127.0.0.1",
            "--port",
            str(pp_port),
            "--plugins",
            "proxy.plugin.ProxyPoolPlugin",
            *pool,
        ],
    )
    wait_for_port("127.0.0.1", pp_port, proc=pp, log=log)
    tools.append(
        Tool("proxy.py ProxyPoolPlugin", ("127.0.0.1", pp_port), lambda: descendants(pp.pid))
    )
    floor_port = free_port("127.0.0.1")
    floor_argv = [sys.executable, "-m", "bench.relay_floor", f"127.0.0.1:{floor_port}", *urls]
    floor, log = bed.spawn("relay-floor", [*floor_argv, "--workers", str(workers)])
    wait_for_port("127.0.0.1", floor_port, proc=floor, log=log)
    name = f"CPython floor x{workers}"
    tools.append(Tool(name, ("127.0.0.1", floor_port), lambda: descendants(floor.pid)))
    return tools, ours.stop


def report(tools: list[Tool], rounds: int, seconds: float) -> None:
    print(f"\nmedians of {rounds} rounds, {seconds:g} s per run")
    print(
        f"{'tool':<26}{'clients':>8}{'req/s':>9}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'errors':>8}{'CPU s/1k':>10}{'RSS MiB':>9}"
    )
    for tool in tools:
        for clients, runs in tool.runs.items():
            print(
                f"{tool.name:<26}{clients:>8}"
                f"{statistics.median(r.requests_per_s for r in runs):>9,.0f}"
                f"{statistics.median(r.p50_ms for r in runs):>8.2f}"
                f"{statistics.median(r.p99_ms for r in runs):>8.2f}"
                f"{sum(r.errors for r in runs):>8}"
                f"{statistics.median(r.cpu_per_1000 for r in runs):>10.3f}"
                f"{tool.rss_mib:>9.1f}"
            )
    ours, go = tools[0].runs[CLIENTS[-1]], tools[1].runs[CLIENTS[-1]]
    ratio = statistics.median(r.requests_per_s for r in ours) / statistics.median(
        r.requests_per_s for r in go
    )
    p50 = statistics.median(r.p50_ms for r in ours) / statistics.median(r.p50_ms for r in go)
    floor = tools[-1].runs[CLIENTS[-1]]
    to_floor = statistics.median(r.requests_per_s for r in ours) / statistics.median(
        r.requests_per_s for r in floor
    )
    print(
        f"rotator vs the CPython floor at {CLIENTS[-1]} clients: req/s ratio {to_floor:.2f} "
        "(what the rotator's work per request costs)"
    )
    print(
        f"rotator vs go reference at {CLIENTS[-1]} clients: "
        f"req/s ratio {ratio:.2f}, p50 ratio {p50:.2f} (target R >= 1.0, P <= 1.0)"
    )


def main(rounds: int, seconds: float, workers: int) -> None:
    if shutil.which("wrk") is None:
        raise missing("wrk", "apt-get install wrk")
    goref = goref_binary()
    with Testbed() as bed, bed_of_upstreams(bed, goref) as (origin, upstreams):
        redis = RedisServer(bed)
        tools, stop = start_tools(bed, goref, upstreams, redis, workers)
        try:
            for tool in tools:  # warm up: connections, caches, the pool's first picks
                wrk(tool, origin, CLIENTS[-1], 2.0, bed.workdir)
            for n in range(1, rounds + 1):
                for clients in CLIENTS:
                    for tool in tools:
                        run = wrk(tool, origin, clients, seconds, bed.workdir)
                        tool.runs.setdefault(clients, []).append(run)
                        print(
                            f"round {n} {tool.name:<26} {clients:>3} clients: "
                            f"{run.requests_per_s:>7,.0f} req/s  p50 {run.p50_ms:.2f} ms  "
                            f"p99 {run.p99_ms:.2f} ms  errors {run.errors}  "
                            f"CPU {run.cpu_per_1000:.3f} s/1k",
                            flush=True,
                        )
                        time.sleep(1.0)  # let the last run's connections close
            for tool in tools:
                tool.rss_mib = rss_mib(tool.pids())
        finally:
            stop()
        report(tools, rounds, seconds)
