"""values.schema.json describes the chart's values in values.yaml's own
words (issue 32, item 4): generated, so they cannot drift."""

from __future__ import annotations

import json

from tests.harness.values_schema import CHART, comments, render


def test_committed_schema_carries_the_values_comments() -> None:
    committed = (CHART / "values.schema.json").read_text()
    assert committed == render(), "run: hack/render-manifests.sh"


def test_every_section_and_most_values_are_described() -> None:
    schema = json.loads(render())
    for name, node in schema["properties"].items():
        assert node.get("description"), f"{name}: no comment above it in values.yaml"
    assert len(comments((CHART / "values.yaml").read_text())) >= 70


def test_comments_belong_to_the_key_below_or_beside_them() -> None:
    text = (
        "# The section.\n"
        "top:\n"
        "  # Above the key,\n"
        "  # two lines.\n"
        "  key: 1          # and beside it\n"
        "  plain: 2\n"
        "list: []\n"
        "#  - name: example   (commented out)\n"
        "\n"
        "after: 3\n"
    )
    assert comments(text) == {
        ("top",): "The section.",
        ("top", "key"): "Above the key, two lines. and beside it",
    }
