"""The ``proxyrefresh`` command.

Every Job pod runs ``proxyrefresh worker`` and pays for its own start-up,
so that one invocation goes straight to the worker: importing typer and
building the command tree from every command's signature was a tenth of a
pod's start-up CPU, paid by each of a run's pods. Anything else (options,
``--help``, every other command) is the typer app in :mod:`proxyrefresh.front.cli`.

Importing is most of a short command's start-up, and what it makes
(modules, classes, pydantic's validators) lives as long as the process: no
collection can free any of it, yet every full one walks all of it, and so
does the one at exit. So the collector waits while the command's modules
load, then freezes what they made (``gc.freeze``: left out of every later
collection) and runs as usual for whatever the command does. (The garbage
start-up leaves is frozen with it: some 700 objects of 56,000.) For
``proxyrefresh check`` that is 7% of the instructions of a run on one
candidate (callgrind), and about a fifth of the CPU of the bench's run on
2,000 (bench/check_throughput.py), which before spent a 28 ms full
collection walking its start-up's objects.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable


def version() -> int:
    from proxyrefresh import __version__

    print(f"proxyrefresh {__version__}")
    return 0


def command(args: list[str]) -> Callable[[], int | None]:
    """The function that runs the command ``args`` name, its modules loaded."""
    if args == ["worker"]:
        from proxyrefresh.worker.pod import main as pod_main

        return pod_main
    if args == ["--version"]:  # a probe's question: no typer, no pydantic to load
        return version
    from proxyrefresh.front.cli import main as cli_main

    return cli_main


def main() -> None:
    gc.disable()
    try:
        run = command(sys.argv[1:])
    finally:
        gc.freeze()
        gc.enable()
    sys.exit(run())


if __name__ == "__main__":
    main()
