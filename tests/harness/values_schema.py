"""The chart's values.schema.json with a description for every value that
values.yaml explains: its comments are the one place a value is documented,
and `helm show values`, editors and the schema all say the same.

    python -m tests.harness.values_schema    # rewrites the schema in place

hack/render-manifests.sh runs it; a unit test fails when the committed
schema is not what it writes. The types and bounds stay hand-written."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

CHART = Path(__file__).resolve().parents[2] / "charts" / "proxyrefresh"
KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z][A-Za-z0-9_]*):(?P<rest>.*)$")
TRAILING = re.compile(r"\s#\s*(?P<text>.*)$")

Path_ = tuple[str, ...]


def comments(values_yaml: str) -> dict[Path_, str]:
    """Each key's comment: the block of comment lines right above it at its
    indentation, then the comment at the end of its line. Commented-out
    examples (after a blank line, or deeper) belong to no key."""
    found: dict[Path_, str] = {}
    stack: list[tuple[int, str]] = []
    block: list[str] = []
    block_indent = -1
    for line in values_yaml.splitlines():
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if not stripped:
            block = []
            continue
        if stripped.startswith("#"):
            if block and indent != block_indent:
                block = []
            block_indent = indent
            block.append(stripped.lstrip("#").strip())
            continue
        match = KEY.match(line)
        if match is None:  # a list item, a continuation: no key of its own
            block = []
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = (*(key for _, key in stack), match["key"])
        trailing = TRAILING.search(match["rest"])
        parts = (block if block_indent == indent else []) + ([trailing["text"]] if trailing else [])
        if parts:
            found[path] = " ".join(" ".join(parts).split())
        stack.append((indent, match["key"]))
        block = []
    return found


def describe(schema: dict[str, Any], found: dict[Path_, str]) -> dict[str, Any]:
    """``schema`` with each commented value's description set."""
    for path, text in found.items():
        node: dict[str, Any] | None = schema
        for key in path:
            node = (node or {}).get("properties", {}).get(key)
        if node is not None:
            node["description"] = text
    return schema


def render() -> str:
    schema = json.loads((CHART / "values.schema.json").read_text())
    found = comments((CHART / "values.yaml").read_text())
    return json.dumps(describe(schema, found), indent=2) + "\n"


if __name__ == "__main__":
    (CHART / "values.schema.json").write_text(render())
    sys.exit(0)
