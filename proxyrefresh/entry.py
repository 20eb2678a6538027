"""The ``proxyrefresh`` command.

Every Job pod runs ``proxyrefresh worker`` and pays for its own start-up,
so that one invocation goes straight to the worker: importing typer and
building the command tree from every command's signature was a tenth of a
pod's start-up CPU, paid by each of a run's pods. Anything else (options,
``--help``, every other command) is the typer app in :mod:`proxyrefresh.cli`.
"""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:] == ["worker"]:
        from proxyrefresh.worker.pod import main as pod_main

        sys.exit(pod_main())
    from proxyrefresh.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
