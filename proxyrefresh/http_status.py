"""HTTP statuses in our own words: a server's reason phrase is its text,
and text a server chose is never repeated into a status, an Event or a
failure reason (a hostile list server or proxy would use it)."""

from __future__ import annotations

import http


def text(code: int) -> str:
    """``HTTP 404 Not Found``, with the standard phrase or none."""
    try:
        return f"HTTP {code} {http.HTTPStatus(code).phrase}"
    except ValueError:
        return f"HTTP {code}"
