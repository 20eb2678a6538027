"""A list parsed as it downloads finds what the whole list parsed at once
finds, wherever the download's pieces are cut, and hands its candidates on
without holding them."""

from __future__ import annotations

import json
import random

import pytest

from proxyrefresh.models import Protocol, Proxy
from proxyrefresh.operator.list_reader import Gathered, ListReader
from proxyrefresh.parse import Candidates, parse_text

LIST = (
    "# a list with every kind of line\r\n"
    "1.2.3.4:8080\r\n"
    "socks5://user:pw@5.6.7.8:1080\n"
    "\n"
    "1.2.3.4:8080\r"  # a duplicate, after a bare CR
    "9.9.9.9:99999\n"  # a bad port
    "ünïcode text, nothing proxy-like\u2028"
    + "".join(f"10.0.{i // 256}.{i % 256}:3128\n" for i in range(5000))
    + "[::1]:8000"  # no final line break
)


def pieces(data: bytes, cuts: int, rng: random.Random) -> list[bytes]:
    at = sorted(rng.sample(range(1, len(data)), cuts))
    return [data[a:b] for a, b in zip([0, *at], [*at, len(data)], strict=True)]


async def read(data: list[bytes], sink: Gathered | None = None) -> ListReader:
    reader = ListReader(Protocol.HTTP, sink or Gathered(), 1 << 20, lambda count: None)
    for piece in data:
        await reader.feed(piece)
    await reader.end()
    return reader


@pytest.mark.parametrize("seed", range(8))
async def test_pieces_cut_anywhere_parse_as_the_whole_list(seed: int) -> None:
    whole = parse_text(LIST)
    rng = random.Random(seed)
    sink = Gathered()
    reader = await read(pieces(LIST.encode(), rng.randint(1, 60), rng), sink)
    assert [p.url for p in sink.candidates] == [p.url for p in whole.candidates]
    assert reader.added == len(whole.candidates) == 5003
    assert reader.found == 5004  # the repeated one too
    got = reader.report
    assert (got.lines, got.blank_lines, got.comment_lines, got.ignored_lines) == (
        whole.lines, whole.blank_lines, whole.comment_lines, whole.ignored_lines
    )  # fmt: skip
    assert [str(e) for e in got.errors] == [str(e) for e in whole.errors]
    assert got.errors[0].where == "line 6"


async def test_a_json_document_is_read_whole_even_after_leading_blanks() -> None:
    document = json.dumps([{"ip": "1.2.3.4", "port": 80, "protocol": "socks5"}, "5.6.7.8:81"])
    reader = await read([b"  \n", b"\t", document[:7].encode(), document[7:].encode()])
    assert reader.found == 2
    assert reader.report.error_count == 0  # not read line by line: no '"ip":' line errors
    assert isinstance(reader.sink, Gathered)
    assert [p.url for p in reader.sink.candidates] == [
        "socks5://1.2.3.4:80",
        "http://5.6.7.8:81",
    ]


async def test_a_download_tried_again_counts_its_proxies_once() -> None:
    sink = Gathered()
    reader = ListReader(Protocol.HTTP, sink, 1 << 20, lambda count: None)
    await reader.feed(b"1.1.1.1:80\n2.2.2.2:80\n3.3.")  # then the connection drops
    reader.restart()
    for piece in (b"1.1.1.1:80\n2.2.2.2:80\n", b"3.3.3.3:80\n"):
        await reader.feed(piece)
    await reader.end()
    assert (reader.added, reader.found, sink.count) == (3, 3, 3)
    assert reader.report.lines == 3  # the second attempt's lines only


async def test_the_refresh_limit_is_checked_as_candidates_arrive() -> None:
    class Over(Exception):
        pass

    def check(count: int) -> None:
        if count > 2500:
            raise Over(count)

    reader = ListReader(Protocol.HTTP, Gathered(), 1 << 20, check)
    with pytest.raises(Over):
        await reader.feed("".join(f"10.1.{i // 256}.{i % 256}:80\n" for i in range(6000)).encode())
    assert reader.sink.count <= 4000  # stopped within a piece of the limit, not at the end


def test_candidates_give_each_proxy_with_its_identity() -> None:
    found = Candidates()
    for url in ("http://1.2.3.4:80", "http://u:p@1.2.3.4:80", "http://EXAMPLE.com:80"):
        found.add(Proxy.from_url(url))
    identities = [identity for identity, _ in found.entries()]
    assert identities[0] == "http://1.2.3.4:80"
    assert len(set(identities)) == 3
    kept = Candidates(keep_proxies=True)
    for _, proxy in found.entries():
        kept.add(proxy)
    assert list(kept.entries()) == list(found.entries())
