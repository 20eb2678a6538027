"""The fan-out core: chunks of work in Redis, one Indexed Job pod per chunk,
progress, completion and results. It knows nothing of what its items are:
a second resource kind (scraping URLs in chunks, say) sits on it unchanged
(tests/e2e/squares is one). docs/architecture.md shows how.
"""
