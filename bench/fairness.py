"""Many objects of one tenant, and another tenant's refresh, on the local
control plane (issue 31's target: 1,000 ProxyRefreshes and 200 ProxyPools
in the cluster, another tenant's refresh still starts within 5 s, the
operator's CPU and Redis connections bounded).

Tenant A's namespace holds R refreshes on R/10 pools, concurrencyPolicy
Forbid (one running per pool, its Job held without pods by a quota, the
others waiting) and P ProxyPools. Once the operator has settled, tenant B
applies a one-proxy refresh: the time to Scraping and to Complete is
measured, and the operator's CPU over a quiet minute, its pub/sub and total
Redis connections, and its RSS are printed next to their targets.

    .venv/bin/python -m bench.fairness [-r 1000] [-p 200] [--quiet 60]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from redis import Redis as SyncRedis

from proxyrefresh.models import Anonymity
from tests.harness.cluster import Cluster
from tests.harness.kubectl import Kubectl
from tests.harness.scenario import OperatorProcess
from tests.harness.testbed import RedisServer, Testbed
from tests.harness.waiting import wait_until

START_TARGET = 5.0  # s from apply to Scraping, for the other tenant
CPU_TARGET = 0.25  # of a core, on average over the quiet minute


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(text.split("VmRSS:")[1].split()[0]) / 1024


def refresh(name: str, pool: str, proxy: str, judge: str) -> dict[str, Any]:
    return {
        "apiVersion": "proxyrefresh.dev/v1alpha1",
        "kind": "ProxyRefresh",
        "metadata": {"name": name},
        "spec": {
            "pool": pool,
            "concurrencyPolicy": "Forbid",
            "sources": [{"inline": [proxy]}],
            "checker": {"judges": [judge], "timeoutSeconds": 2},
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-r", "--refreshes", type=int, default=1000)
    parser.add_argument("-p", "--pools", type=int, default=200)
    parser.add_argument("--quiet", type=float, default=60.0, help="seconds of CPU measured")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="proxyrefresh-bench-"))
    root.chmod(0o755)
    cluster = Cluster(root)
    cluster.up()
    admin = Kubectl(cluster.kubeconfig, "t-a")
    other = Kubectl(cluster.kubeconfig, "t-b")
    try:
        with Testbed() as bed:
            judge = bed.judge()
            proxy = bed.tinyproxy("127.0.0.11", Anonymity.ELITE).url
            redis = RedisServer(bed)
            admin.install_crds()
            for k in (admin, other):
                k("create", "namespace", k.namespace, namespaced=False)
            admin.apply(
                {
                    "apiVersion": "v1",
                    "kind": "ResourceQuota",
                    "metadata": {"name": "no-pods"},
                    "spec": {"hard": {"pods": "0"}},
                }
            )
            operator = OperatorProcess(
                cluster.kubeconfig,
                redis.url,
                root / "operator.log",
                PROXYREFRESH_OPERATOR_NAMESPACES='["t-*"]',
            )
            operator.start()
            assert operator.proc is not None
            pid = operator.proc.pid
            items: list[dict[str, Any]] = [
                refresh(f"r-{i}", f"p{i % max(1, args.refreshes // 10)}", proxy, judge)
                for i in range(args.refreshes)
            ]
            items += [
                {
                    "apiVersion": "proxyrefresh.dev/v1alpha1",
                    "kind": "ProxyPool",
                    "metadata": {"name": f"pool-{i}"},
                    "spec": {
                        "minUsable": 0,
                        "template": {
                            "sources": [{"inline": [proxy]}],
                            "checker": {"judges": [judge]},
                        },
                    },
                }
                for i in range(args.pools)
            ]
            applied = time.monotonic()
            for start in range(0, len(items), 200):
                admin.apply(
                    {"apiVersion": "v1", "kind": "List", "items": items[start : start + 200]}
                )

            def settled() -> bool:
                found = json.loads(admin("get", "proxyrefresh,proxypool", "-o", "json").stdout)
                statuses = [it.get("status") or {} for it in found["items"]]
                return all(s.get("phase") or s.get("conditions") for s in statuses)

            wait_until(settled, 600, "every object to have a status", interval=2)
            settle = time.monotonic() - applied
            cpu0, t0 = cpu_seconds(pid), time.monotonic()
            time.sleep(args.quiet)
            quiet_cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)

            other.apply(refresh("mine", "mine", proxy, judge))
            asked = time.monotonic()

            def phase() -> str:
                return str((other.get("proxyrefresh", "mine").get("status") or {}).get("phase"))

            wait_until(
                lambda: phase() not in ("None", "Pending"), 120, "mine to start", interval=0.1
            )
            started = time.monotonic() - asked
            wait_until(lambda: phase() in ("Complete", "Failed"), 300, "mine to end", interval=0.2)
            ended = time.monotonic() - asked
            result = phase()
            with SyncRedis.from_url(redis.url, decode_responses=True) as client:
                clients = client.client_list()
            following = [c for c in clients if int(c["sub"]) > 0]
            rss = rss_mib(pid)
            operator.stop()
            redis.stop()
    finally:
        cluster.down()
        shutil.rmtree(root, ignore_errors=True)  # nothing left behind
    channels = sum(int(c["sub"]) for c in following)
    print(
        f"objects           {args.refreshes} refreshes ({args.refreshes // 10} pools, Forbid), "
        f"{args.pools} ProxyPools, in one namespace; settled in {settle:.0f}s"
    )
    print(
        f"other tenant      Scraping after {started:.2f}s (target <= {START_TARGET:g}s, "
        f"ratio {started / START_TARGET:.2f}); {result} after {ended:.1f}s"
    )
    print(
        f"operator CPU      {quiet_cpu:.2f} of a core over {args.quiet:g}s quiet "
        f"(target <= {CPU_TARGET:g}, ratio {quiet_cpu / CPU_TARGET:.2f})"
    )
    print(
        f"Redis connections {len(clients)} in all, {len(following)} subscribed "
        f"({channels} channels)"
    )
    print(f"operator RSS      {rss:.0f} MiB")
    ok = result == "Complete" and started <= START_TARGET and len(following) <= 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
