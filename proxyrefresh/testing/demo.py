"""``make demo`` before the operator exists: the whole check on one machine.

Starts real local proxies of every anonymity level plus dead ones and a
judge, runs ``proxyrefresh check`` on a list of them exactly as a user
would, and prints what it found.
"""

from __future__ import annotations

import json
import subprocess
import sys

from rich.console import Console
from rich.table import Table

from proxyrefresh.testing.testbed import Testbed, standard_set


def main() -> int:
    console = Console(width=max(Console().width, 130))
    with Testbed() as bed:
        console.print("[bold]starting a judge and local proxies[/bold] (tinyproxy, squid, pproxy)")
        judge = bed.judge()
        proxies = standard_set(bed) + bed.refused("127.0.0.23", 3) + bed.blackholes("127.0.0.24", 3)
        listing = bed.workdir / "candidates.txt"
        listing.write_text(
            "# demo candidates: live proxies of every level, refused ports, black holes\n"
            + "\n".join(
                p.url.removeprefix("http://") if p.url.startswith("http://") else p.url
                for p in proxies
            )
            + "\nnot-a-proxy:99999\n"
        )
        command = [
            sys.executable,
            "-m",
            "proxyrefresh.cli",
            "check",
            str(listing),
            "--judge",
            judge,
            "--timeout",
            "3",
            "--all",
        ]
        console.print(
            f"[bold]$[/bold] proxyrefresh check {listing.name} --judge {judge} --timeout 3 --all"
        )
        result = subprocess.run(command, stdout=subprocess.PIPE, text=True)
        rows = [json.loads(line) for line in result.stdout.splitlines()]
        expected = {p.url: p for p in proxies}
        table = Table(title="proxyrefresh check: results")
        for column in ("proxy", "alive", "anonymity", "exit ip", "latency ms", "why", "expected"):
            table.add_column(column)
        wrong = 0
        for row in sorted(rows, key=lambda r: (not r["alive"], r["proxy"])):
            local = expected.get(row["proxy"])
            want = local.expect.value if local and local.expect else "dead"
            got = row.get("anonymity") or "dead"
            wrong += want != got
            table.add_row(
                row["proxy"],
                "yes" if row["alive"] else "no",
                row.get("anonymity", ""),
                row.get("exit_ip", ""),
                str(row.get("latency_ms", "")),
                row.get("error", ""),
                want if want == got else f"[red]{want}[/red]",
            )
        console.print(table)
        console.print("all classified as expected" if not wrong else f"[red]{wrong} wrong[/red]")
        return result.returncode or (1 if wrong else 0)


if __name__ == "__main__":
    sys.exit(main())
