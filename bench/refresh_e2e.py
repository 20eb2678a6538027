"""A big refresh end to end on the local control plane.

N candidates (default 20,000: 2% live pproxy listeners, the rest half
refused, half black-holed), chunkSize 200, parallelism 4, checker timeout T.
Prints the wall time from `kubectl apply` to condition Complete, its floor
(chunk waves x the checker's floor per chunk: a black hole costs T and a
chunk of 200 fits in one round of the pod's concurrency), the number of
status patches the operator sent (target: at most one per 2 s of runtime
plus 10) and the operator's peak RSS.

    .venv/bin/python -m bench.refresh_e2e [-n 20000] [--chunk 200|auto] [--parallelism 4] [-t 5]
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import tempfile
import time
from pathlib import Path

from tests.harness.cluster import Cluster
from tests.harness.kubectl import Kubectl
from tests.harness.scenario import ListServer, OperatorProcess, build_candidates
from tests.harness.testbed import RedisServer, Testbed

CONCURRENCY = 256
HOLES = "http://127.0.0.43"  # build_candidates puts its black holes there


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--candidates", type=int, default=20_000)
    parser.add_argument("--chunk", default="200", help="a number, or auto")
    parser.add_argument("--parallelism", type=int, default=4)
    parser.add_argument("-t", "--timeout", type=float, default=5.0)
    args = parser.parse_args()
    live = max(1, args.candidates // 50)
    dead = args.candidates - live
    root = Path(tempfile.mkdtemp(prefix="proxyrefresh-bench-"))
    root.chmod(0o755)
    cluster = Cluster(root)
    cluster.up(node_pods=max(16, args.parallelism))
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
            manifest = {
                "apiVersion": "proxyrefresh.dev/v1alpha1",
                "kind": "ProxyRefresh",
                "metadata": {"name": "bench", "namespace": "default"},
                "spec": {
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
            started = time.monotonic()
            kubectl.apply(manifest)
            done = kubectl(
                "wait", "--for=condition=Complete", "proxyrefresh/bench", "--timeout=3600s",
                check=False, timeout=3700,
            )  # fmt: skip
            wall = time.monotonic() - started
            status = kubectl.get("proxyrefresh", "bench")["status"]
            assert operator.proc is not None
            pid = operator.proc.pid
            operator.proc.terminate()
            _, _, usage = os.wait4(pid, 0)
            operator.proc = None
            lists.close()
            redis.stop()
    finally:
        cluster.down()
    log = (root / "operator.log").read_text()
    patches = [
        int(n) for n in re.findall(r"status patches sent by this operator so far: (\d+)", log)
    ]
    chunks = int(status.get("totalChunks") or 0)
    size = int(status.get("chunkSize") or 0) or int(args.chunk)
    # A chunk costs a timeout per round of the pod's concurrency that holds a
    # black hole; pods run `parallelism` chunks at once.
    costs = [
        math.ceil(sum(1 for u in cands.urls[i : i + size] if u.startswith(HOLES)) / CONCURRENCY)
        * args.timeout
        for i in range(0, len(cands.urls), size)
    ]
    holes = [cost for cost in costs if cost]
    waves = math.ceil(len(holes) / args.parallelism)
    floor = waves * max(holes, default=args.timeout)
    budget = wall / 2 + 10
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
        f"status patches    {patches[-1] if patches else '?'}  (budget {budget:.0f}: "
        "one per 2 s of runtime + 10)"
    )
    print(f"operator peak RSS {usage.ru_maxrss / 1024:.1f} MiB")
    ok = done.returncode == 0 and status.get("live") == len(cands.live)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
