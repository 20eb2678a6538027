"""``make demo``: one refresh, from ``kubectl apply`` to the merged pool.

Brings up the local cluster with its real node, Redis and the operator (as
``make dev-up`` does; the refresh's workers are containers on the node),
starts real proxies of every anonymity level plus dead ones and serves them
as a candidate list, applies manifests/examples/refresh.yaml,
shows ``kubectl get proxyrefresh -w`` until the refresh is done, prints the
pool, and takes everything down again (KEEP=1 leaves it up).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from rich.console import Console
from rich.table import Table

from proxyrefresh.constants import LABEL_COMPONENT, LABEL_REFRESH
from proxyrefresh.pool import AsyncPool, Pool
from tests.harness import devenv
from tests.harness.cluster import DEFAULT_DIR, ROOT, Cluster
from tests.harness.kubectl import Kubectl
from tests.harness.operator_pod import NAMESPACE as OPERATOR_NAMESPACE
from tests.harness.scenario import ListServer, build_candidates
from tests.harness.testbed import Testbed, standard_set

EXAMPLE = ROOT / "manifests" / "examples" / "refresh.yaml"
POOL = "default"  # the example's pool, in namespace default


async def _delete_pool(url: str) -> None:
    client = AsyncRedis.from_url(url)
    try:
        await AsyncPool(client, POOL).delete()
    finally:
        await client.aclose()


def pool_before(redis_url: str, console: Console) -> set[str]:
    """What the pool holds before the demo's refresh. An earlier demo's
    proxies (a test bed long gone) would be listed as if alive, so in the
    harness's own Redis the pool starts empty; a Redis the user named
    (PROXYREFRESH_REDIS_URL) keeps its data, and the check looks past it."""
    if not os.environ.get("PROXYREFRESH_REDIS_URL"):
        asyncio.run(_delete_pool(redis_url))
    with Redis.from_url(redis_url) as client:
        held = {entry.proxy for entry in Pool(client, POOL).entries()}
    if held:
        console.print(f"pool {POOL} already holds {len(held)} proxies; the check looks past them")
    return held


def main() -> int:
    console = Console(width=max(Console().width, 120))
    cluster = Cluster(DEFAULT_DIR)
    kubectl = Kubectl(cluster.kubeconfig)
    console.rule("[bold]proxyrefresh demo")
    devenv.up(cluster)
    console.print(f"export KUBECONFIG={cluster.kubeconfig}")
    show(console, kubectl, "get", "node", "-o", "wide")
    show(console, kubectl, "get", "pods", "-n", OPERATOR_NAMESPACE, "-o", "wide")
    try:
        with Testbed() as bed:
            console.print("starting the judge and local proxies (tinyproxy, squid, pproxy)")
            bed.judge("127.0.0.2", 8080)
            fixed = [p for p in standard_set(bed) if p.expect is not None]
            cands = build_candidates(bed, fixed, fleet=8, refused=40, holes=30)
            lists = ListServer(bed.workdir / "lists", host="127.0.0.3", port=8000)
            lists.put("candidates.txt", cands.text())
            console.print(
                f"{len(cands.urls)} candidates: {len(cands.live)} live "
                f"({len(cands.usable())} anonymous or better), the rest refused "
                "or black-holed"
            )
            kubectl("delete", "-f", str(EXAMPLE), "--ignore-not-found", "--wait=true")
            before = pool_before(str(cluster.state()["redis_url"]), console)
            console.print(f"[bold]$ kubectl apply -f {EXAMPLE.relative_to(ROOT)}")
            subprocess.run([*kubectl.argv(), "apply", "-f", str(EXAMPLE)], check=True)
            console.print("[bold]$ kubectl get proxyrefresh -w")
            watch = subprocess.Popen(
                [*kubectl.argv(), "get", "proxyrefresh", "-w"], stdout=subprocess.PIPE, text=True
            )
            assert watch.stdout is not None
            for line in watch.stdout:
                console.print(line.rstrip(), highlight=False)
                if " Complete " in line or " Failed " in line:
                    break
            watch.terminate()
            kubectl(
                "wait",
                "--for=jsonpath={.status.completedAt}",
                "proxyrefresh/demo",
                "--timeout=120s",
            )
            status = kubectl.get("proxyrefresh", "demo")["status"]
            console.print(f"[bold]{status['phase']}[/bold]: {status.get('message')}")
            workers = f"{LABEL_COMPONENT}=worker,{LABEL_REFRESH}=demo"
            show(console, kubectl, "get", "pods", "-l", workers, "-o", "wide")
            cm = kubectl.get("configmap", "default-proxies")
            table = Table(title="ConfigMap default-proxies: live_proxies.json")
            for column in ("proxy", "anonymity", "exit ip", "latency ms", "score"):
                table.add_column(column)
            pool = json.loads(cm["data"]["live_proxies.json"])
            for entry in pool:
                table.add_row(
                    entry["proxy"],
                    entry["anonymity"],
                    entry["exit_ip"],
                    f"{entry['latency_ms']:.1f}",
                    f"{entry['score']:.2f}",
                )
            console.print(table)
            shown = {e["proxy"] for e in pool}
            usable = cands.usable()
            ok = usable <= shown and shown - usable <= before and status["phase"] == "Complete"
            console.print(
                "pool matches the proxies that should pass the filter"
                if ok
                else "[red]pool does not match what should pass[/red]"
            )
            lists.close()
            return 0 if ok else 1
    finally:
        if not os.environ.get("KEEP"):
            devenv.down(cluster)
            console.print("demo: everything stopped (KEEP=1 leaves it running)")


def show(console: Console, kubectl: Kubectl, *args: str) -> None:
    """A kubectl command and what it printed, as a user would see it."""
    console.print(f"[bold]$ kubectl {' '.join(args)}")
    console.print(kubectl(*args, check=False).stdout.rstrip(), highlight=False, soft_wrap=True)


if __name__ == "__main__":
    sys.exit(main())
