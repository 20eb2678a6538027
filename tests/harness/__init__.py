"""Real local servers for tests, the demo and the benchmarks.

Dev and test tooling only: it lives under tests/, so it is in neither the
wheel nor the image (tests/unit/test_layout.py lists the wheel's files).
The Makefile, the tests and bench/ reach it the same way, as
``tests.harness`` from the checkout's root (``python -m tests.harness.X``).

Nothing here is a mock: tinyproxy, squid and pproxy are the real programs,
each bound to its own 127.0.0.x address so the judge sees a distinct exit
IP per proxy. The same testbed backs pytest, ``make demo`` and bench/.
"""
