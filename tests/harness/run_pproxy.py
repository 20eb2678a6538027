"""pproxy on uvloop where we have it: ``python -m tests.harness.run_pproxy ARGS``.

pproxy installs uvloop whenever it can import it, then asks for the current
event loop the old way, which uvloop 0.22+ refuses (no current loop): a
plain ``python -m pproxy`` dies at start next to our uvloop. So uvloop is
hidden from pproxy and its loop is made current here instead; the SOCKS and
HTTP servers stay exactly as pproxy wrote them, and fast enough that a
bench of the checker measures the checker, not pproxy.
"""

from __future__ import annotations

import asyncio
import runpy
import sys

if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        pass
    else:
        asyncio.set_event_loop(uvloop.new_event_loop())
    sys.modules["uvloop"] = None  # type: ignore[assignment]  # pproxy's own install() is skipped
    sys.argv[0] = "pproxy"
    runpy.run_module("pproxy", run_name="__main__", alter_sys=True)
