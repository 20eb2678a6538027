"""Docstrings as text for people: what `--help` and `kubectl explain` show."""

from __future__ import annotations

import inspect


def unwrapped(doc: str) -> str:
    """A docstring with its line breaks joined within paragraphs: help and
    `kubectl explain` wrap text to the reader's width, and a docstring's own
    breaks would cut its sentences in the middle."""
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs)
