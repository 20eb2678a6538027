"""A stored result read an outcome at a time gives what validating it whole
gives, whatever order and spacing its fields were written in, and a result
that is not one says so instead of merging half of it silently."""

from __future__ import annotations

import json

import pytest

from proxyrefresh.fanout.results import ChunkResult, ItemOutcome, StoredResult

RESULT = ChunkResult(
    index=3,
    outcomes=[
        ItemOutcome(pos=i, ok=i % 3 == 0, value={"n": i, "text": 'a "quoted", [bracketed] }'})
        for i in range(50)
    ],
    pending=[{"outcomes": [1]}, "x"],  # a pending item that looks like the field
    processed=50,
    succeeded=17,
    partial=True,
    reason="deadline",
)


def fields_reordered(result: ChunkResult, indent: int | None) -> str:
    """The same result with the outcomes last, as another writer may put them."""
    data = result.model_dump(mode="json")
    outcomes = data.pop("outcomes")
    return json.dumps({**data, "outcomes": outcomes}, indent=indent)


@pytest.mark.parametrize(
    "raw",
    [
        RESULT.model_dump_json().encode(),
        fields_reordered(RESULT, None),
        fields_reordered(RESULT, 2),
    ],
    ids=["as-written", "outcomes-last", "indented"],
)
def test_outcomes_streamed_are_the_outcomes_validated_whole(raw: bytes | str) -> None:
    stored = StoredResult(raw)
    assert list(stored.outcomes()) == RESULT.outcomes
    assert stored.pending == RESULT.pending
    assert stored.whole() == RESULT


def test_the_fields_are_known_only_once_the_outcomes_were_read() -> None:
    stored = StoredResult(RESULT.model_dump_json())
    with pytest.raises(RuntimeError, match="once its outcomes were read"):
        stored.pending  # noqa: B018
    assert sum(1 for _ in stored.outcomes()) == 50
    assert len(stored.pending) == 2


@pytest.mark.parametrize(
    "raw",
    ['["not", "an", "object"]', '{"index": 1, "outcomes": [{"pos": 0, "ok": true', "", "{"],
)
def test_a_result_that_is_not_one_raises(raw: str) -> None:
    with pytest.raises(ValueError, match=r"not a JSON object|Expecting|Unterminated"):
        list(StoredResult(raw).outcomes())


def test_an_outcome_of_the_wrong_shape_is_refused_as_the_model_refuses_it() -> None:
    raw = '{"index": 0, "outcomes": [{"pos": "zero?", "ok": true, "value": {}}]}'
    with pytest.raises(ValueError, match="pos"):
        list(StoredResult(raw).outcomes())
