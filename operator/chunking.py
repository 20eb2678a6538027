"""How many items a chunk gets when the spec says ``chunkSize: auto``.

Every pod pays a fixed start (a process, its imports, the judges, Redis),
and every wave of pods pays the Job controller's turn-around, so the fewest
chunks are best, as long as each fits its deadline. A pod checks
``concurrency`` proxies at once and a dead one costs up to the checker's
timeout, so a chunk of ``k * concurrency`` proxies needs at most ``k``
timeouts. The rule:

1. one wave of pods: ``ceil(candidates / parallelism)`` per chunk;
2. rounded up to whole rounds of the pod's concurrency (a round half full
   costs as long as a full one, so a small refresh is one pod, not many
   pods with a few proxies each);
3. at most as many rounds as fit in the soft deadline (85% of
   ``deadlines.chunkSeconds``, when the worker stops itself), and at most
   MAX_CHUNK items (one Redis value stays small);
4. no more than there are candidates, and at least one.

So 5,000 candidates, parallelism 10, concurrency 256, timeout 5 s give
chunks of 512 (two rounds, 10 s); 100,000 at parallelism 16 give 6,400
(25 rounds, 125 s, well within 900 s).
"""

from __future__ import annotations

import math

MAX_CHUNK = 10_000
SOFT_DEADLINE = 0.85  # the share of chunkSeconds after which a pod stops itself


def auto_chunk_size(
    candidates: int, parallelism: int, concurrency: int, timeout: float, chunk_seconds: float
) -> int:
    if candidates <= 0:
        return 1
    one_wave = math.ceil(candidates / max(1, parallelism))
    rounds = math.ceil(one_wave / max(1, concurrency))
    most_rounds = max(1, math.floor(chunk_seconds * SOFT_DEADLINE / max(timeout, 0.001)))
    size = min(rounds, most_rounds) * concurrency
    return max(1, min(size, candidates, MAX_CHUNK))
