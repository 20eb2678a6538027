"""A big refresh end to end on the local control plane.

N candidates (default 20,000: 2% live pproxy listeners, the rest half
refused, half black-holed), chunkSize 200, parallelism 4, checker timeout T.
Prints the wall time from `kubectl apply` to condition Complete, its floor
(chunk waves x the checker's floor per chunk: a black hole costs T and a
chunk of 200 fits in one round of the pod's concurrency), the number of
status patches the operator sent (target: at most one a second per
refresh), the size of the status, Redis's peak memory above its start, and
the operator's peak RSS (target: under 80 MiB up to 100,000 candidates,
under 100 MiB at a million).

With ``--refreshes K``, K refreshes of N candidates each (each its own pool)
are applied at once: all must Complete with exact counts.

    .venv/bin/python -m bench.refresh_e2e [-n 20000] [--chunk 200|auto] [--parallelism 4] [-t 5]
    .venv/bin/python -m bench.refresh_e2e -n 100000 --chunk auto --parallelism 16
    .venv/bin/python -m bench.refresh_e2e -n 1000 --chunk auto --refreshes 20
    .venv/bin/python -m bench.refresh_e2e -n 1000000 --live 2000 --chunk auto --parallelism 16
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

from redis import Redis as SyncRedis

from tests.harness.cluster import Cluster
from tests.harness.kubectl import Kubectl
from tests.harness.scenario import ListServer, OperatorProcess, build_candidates
from tests.harness.testbed import RedisServer, Testbed

CONCURRENCY = 256


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--candidates", type=int, default=20_000)
    parser.add_argument("--chunk", default="200", help="a number, or auto")
    parser.add_argument("--parallelism", type=int, default=4)
    parser.add_argument("-t", "--timeout", type=float, default=5.0)
    parser.add_argument("-k", "--refreshes", type=int, default=1, help="at once, one pool each")
    parser.add_argument(
        "--live", type=int, default=0,
        help="live proxies among them (default 2%%; a million takes --live 2000: the test "
        "bed's one proxy process serves a few thousand)",
    )  # fmt: skip
    args = parser.parse_args()
    live = args.live or max(1, args.candidates // 50)
    dead = args.candidates - live
    root = Path(tempfile.mkdtemp(prefix="proxyrefresh-bench-"))
    root.chmod(0o755)
    cluster = Cluster(root)
    cluster.up()  # one real node: 32 pods at most
    kubectl = Kubectl(cluster.kubeconfig)
    try:
        with Testbed() as bed:
            judge = bed.judge()
            cands = build_candidates(bed, [], fleet=live, refused=dead - dead // 2, holes=dead // 2)
            lists = ListServer(bed.workdir / "lists")
            url = lists.put("big.txt", cands.text())
            redis = RedisServer(bed)
            kubectl.install_crds()
            operator = OperatorProcess(cluster.kubeconfig, redis.url, root / "operator.log")
            operator.start()
            names = [f"bench-{i}" if args.refreshes > 1 else "bench" for i in range(args.refreshes)]
            manifests = [
                {
                    "apiVersion": "proxyrefresh.dev/v1alpha1",
                    "kind": "ProxyRefresh",
                    "metadata": {"name": name, "namespace": "default"},
                    "spec": {
                        "pool": name,
                        "sources": [{"url": url}],
                        "chunkSize": args.chunk if args.chunk == "auto" else int(args.chunk),
                        "parallelism": args.parallelism,
                        "minUsable": 1,
                        "checker": {
                            "judges": [judge],
                            "timeoutSeconds": args.timeout,
                            "concurrency": CONCURRENCY,
                        },
                    },
                }
                for name in names
            ]
            with SyncRedis.from_url(redis.url) as client:
                redis_before = int(client.info("memory")["used_memory"])
            assert operator.proc is not None
            proc_status = Path(f"/proc/{operator.proc.pid}/status").read_text()
            idle_rss, idle_peak = (
                int(proc_status.split(f"{field}:")[1].split()[0]) for field in ("VmRSS", "VmHWM")
            )
            # kubectl learns the new kind (discovery, its OpenAPI schema)
            # before the clock starts, as a user's kubectl has long since:
            # else the first apply spends about 2 s on it.
            kubectl("apply", "--dry-run=server", "-f", "-", stdin=json.dumps(manifests[0]))
            started = time.monotonic()
            for manifest in manifests:
                kubectl.apply(manifest)
            returns = [
                kubectl(
                    "wait", "--for=condition=Complete", f"proxyrefresh/{name}", "--timeout=3600s",
                    check=False, timeout=3700,
                ).returncode
                for name in names
            ]  # fmt: skip
            wall = time.monotonic() - started
            statuses = [kubectl.get("proxyrefresh", name)["status"] for name in names]
            status = statuses[0]
            with SyncRedis.from_url(redis.url) as client:
                redis_peak = int(client.info("memory")["used_memory_peak"]) - redis_before
            assert operator.proc is not None
            pid = operator.proc.pid
            # Its own peak: not wait4's ru_maxrss, which counts the image it
            # was started from (this bench's, a million candidates and all).
            peak_rss = int(Path(f"/proc/{pid}/status").read_text().split("VmHWM:")[1].split()[0])
            operator.proc.terminate()
            os.wait4(pid, 0)
            operator.proc = None
            lists.close()
            redis.stop()
        log = (root / "operator.log").read_text()
    finally:
        cluster.down()
        shutil.rmtree(root, ignore_errors=True)  # nothing left behind, interrupted or not
    patches = [
        int(n) for n in re.findall(r"status patches sent by this operator so far: (\d+)", log)
    ]
    chunks = int(status.get("totalChunks") or 0)
    size = int(status.get("chunkSize") or 0) or int(args.chunk)
    # A chunk costs a timeout per round of the pod's concurrency that holds a
    # black hole; pods run `parallelism` chunks at once.
    costs = [
        math.ceil(sum(1 for u in cands.urls[i : i + size] if u in cands.holes) / CONCURRENCY)
        * args.timeout
        for i in range(0, len(cands.urls), size)
    ]
    holes = [cost for cost in costs if cost]
    waves = math.ceil(len(holes) / args.parallelism)
    floor = waves * max(holes, default=args.timeout)
    budget = wall * args.refreshes  # at most one patch a second per refresh
    print(
        f"candidates        {args.candidates} ({len(cands.live)} live), {chunks} chunks of "
        f"{size} (chunkSize {args.chunk}), parallelism {args.parallelism}, "
        f"timeout {args.timeout:g}s"
    )
    print(f"result            {status.get('phase')}: {status.get('message')}")
    print(f"end to end        {wall:.1f}s")
    print(
        f"floor             {floor:.1f}s  ({len(holes)} chunks with black holes, "
        f"{waves} waves x {max(holes, default=args.timeout):g}s)"
    )
    print(f"ratio             {wall / floor:.2f}")
    print(
        f"status patches    {patches[-1] if patches else '?'}  (target <= {budget:.0f}: "
        "one a second per refresh)"
    )
    print(
        f"status size       {max(len(json.dumps(s)) for s in statuses):,} bytes (target < 16 KiB)"
    )
    print(f"Redis peak memory {redis_peak / 2**20:.1f} MiB above its start")
    target_mib = 80 if args.candidates <= 100_000 else 100
    print(
        f"operator peak RSS {peak_rss / 1024:.1f} MiB (target < {target_mib} MiB; "
        f"{idle_rss / 1024:.1f} MiB started and idle, {idle_peak / 1024:.1f} MiB at its "
        "peak before the refresh)"
    )
    exact = [
        s.get("phase") == "Complete"
        and s.get("checked") == len(cands.urls)
        and s.get("live") == len(cands.live)
        for s in statuses
    ]
    if args.refreshes > 1:
        print(f"refreshes         {sum(exact)} of {len(exact)} Complete with exact counts")
        per = (patches[-1] if patches else 0) / len(names) / wall
        print(f"patches/refresh/s {per:.2f} on average (progress writes >= 1 s apart)")
    ok = all(r == 0 for r in returns) and all(exact)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
