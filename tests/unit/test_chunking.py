"""chunkSize: auto, as a pure rule (operator/chunking.py)."""

from __future__ import annotations

import pytest

from proxyrefresh.operator.chunking import MAX_CHUNK, auto_chunk_size


@pytest.mark.parametrize(
    ("candidates", "parallelism", "concurrency", "timeout", "deadline", "size"),
    [
        (5_000, 10, 256, 5, 900, 512),  # one wave of 10 pods, two rounds each
        (100_000, 16, 256, 5, 900, 6_400),  # 25 rounds, well within the deadline
        (100, 10, 256, 5, 900, 100),  # less than a round: one pod, not ten
        (20_000, 4, 256, 10, 60, 1_280),  # the deadline allows 5 rounds of 10 s
        (10**7, 1, 4096, 1, 86_400, MAX_CHUNK),  # one Redis value stays small
        (0, 4, 256, 5, 900, 1),
    ],
)
def test_chunks_are_one_wave_of_whole_rounds_within_the_deadline(
    candidates: int, parallelism: int, concurrency: int, timeout: float, deadline: int, size: int
) -> None:
    assert auto_chunk_size(candidates, parallelism, concurrency, timeout, deadline) == size


def test_every_candidate_fits_in_the_chunks() -> None:
    for candidates in (1, 255, 256, 257, 9_999, 123_457):
        size = auto_chunk_size(candidates, 7, 256, 5, 900)
        chunks = -(-candidates // size)
        assert chunks * size >= candidates
        assert size <= MAX_CHUNK
