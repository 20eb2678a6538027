"""Real local servers for tests, the demo and the benchmarks.

Nothing here is a mock: tinyproxy, squid and pproxy are the real programs,
each bound to its own 127.0.0.x address so the judge sees a distinct exit
IP per proxy. The same testbed backs pytest, ``make demo`` and bench/.
"""
