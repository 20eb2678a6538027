"""The fan-out core: chunks of work in Redis, one Indexed Job pod per chunk,
progress, completion and results. It knows nothing about proxies: a second
resource kind (scraping URLs in chunks, say) sits on it unchanged.
"""
