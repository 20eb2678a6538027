"""Gather candidates from a refresh's sources, concurrently.

URL sources are fetched with requests (in threads, off kopf's event loop),
with connect/read timeouts, retries with exponential backoff that honour
Retry-After on 429/5xx, a size cap, and headers from a Secret. ConfigMap and
inline sources are read as they are. Each source gets its own outcome in
the status; one bad source does not sink the others.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from proxyrefresh.api import Source, SourceStatus
from proxyrefresh.models import Proxy
from proxyrefresh.operator import kube
from proxyrefresh.worker.parse import InputTooLarge, ParseReport, parse_text

USER_AGENT = "proxyrefresh-operator"


class SourceError(RuntimeError):
    """A source could not be read; the message names the cause."""


@dataclass
class ScrapeResult:
    proxies: list[Proxy] = field(default_factory=list)
    sources: list[SourceStatus] = field(default_factory=list)
    duplicates: int = 0

    @property
    def failed(self) -> bool:
        return not self.proxies

    def failure_message(self) -> str:
        return "; ".join(f"{s.source}: {s.message}" for s in self.sources if s.message) or (
            "the sources held no candidate proxies"
        )


def http_session(retries: int) -> requests.Session:
    session = requests.Session()
    retry = Retry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        backoff_factor=0.5,
        backoff_max=30,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=frozenset({"GET"}),
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    return session


def fetch(url: str, headers: dict[str, str], timeout: float, retries: int, max_bytes: int) -> str:
    """GET a list, refusing one over ``max_bytes`` without reading it all."""
    with http_session(retries) as session:
        try:
            resp = session.get(
                url, headers=headers, timeout=(min(10, timeout), timeout), stream=True
            )
        except requests.RequestException as exc:
            raise SourceError(f"unreachable: {type(exc).__name__}: {exc}") from None
        with resp:
            if resp.status_code != 200:
                raise SourceError(f"HTTP {resp.status_code} {resp.reason}")
            body = b""
            for piece in resp.iter_content(64 * 1024):
                body += piece
                if len(body) > max_bytes:
                    raise SourceError(f"larger than the cap of {max_bytes} bytes")
    return body.decode(resp.encoding or "utf-8", errors="replace")


async def read_source(
    source: Source, namespace: str, timeout: float, retries: int, max_bytes: int
) -> str:
    if source.url:
        headers = {}
        if source.headers_secret_ref:
            try:
                headers = await kube.read_secret_data(namespace, source.headers_secret_ref.name)
            except Exception as exc:
                raise SourceError(
                    f"headers Secret {source.headers_secret_ref.name}: {exc}"
                ) from None
        return await asyncio.to_thread(fetch, source.url, headers, timeout, retries, max_bytes)
    if source.config_map_ref:
        ref = source.config_map_ref
        cm = await kube.read_config_map(namespace, ref.name)
        if cm is None:
            raise SourceError(f"ConfigMap {ref.name} not found")
        data = cm.get("data") or {}
        if ref.key not in data:
            raise SourceError(f"ConfigMap {ref.name} has no key {ref.key}")
        return str(data[ref.key])
    return "\n".join(source.inline or [])


async def scrape_one(
    source: Source, namespace: str, timeout: float, retries: int, max_bytes: int
) -> tuple[SourceStatus, ParseReport | None]:
    try:
        text = await read_source(source, namespace, timeout, retries, max_bytes)
        report = parse_text(text, source.protocol, max_bytes)
    except (SourceError, InputTooLarge) as exc:
        return SourceStatus(source=source.label, ok=False, message=str(exc)), None
    ok = bool(report.proxies)
    message = ""
    if report.errors:
        message = f"{len(report.errors)} bad lines, first: {report.errors[0]}"
    if not ok:
        message = message or f"no proxies in {report.lines} lines"
    status = SourceStatus(
        source=source.label,
        ok=ok,
        candidates=len(report.proxies),
        errors=len(report.errors),
        message=message,
    )
    return status, report


async def scrape(
    sources: list[Source], namespace: str, timeout: float, retries: int, max_bytes: int
) -> ScrapeResult:
    outcomes = await asyncio.gather(
        *(scrape_one(s, namespace, timeout, retries, max_bytes) for s in sources)
    )
    merged = ParseReport()
    result = ScrapeResult()
    for status, report in outcomes:
        result.sources.append(status)
        if report is not None:
            merged.merge(report)
    result.proxies = merged.proxies
    result.duplicates = merged.duplicates
    return result
