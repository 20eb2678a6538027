"""Candidate list parsing: every format, every line accounted for."""

from __future__ import annotations

import json

import pytest

from proxyrefresh.models import Protocol, Proxy
from proxyrefresh.parse import (
    InputTooLarge,
    ParseReport,
    lines_of,
    parse_lines,
    parse_pieces,
    parse_text,
)


def urls(text: str, default: Protocol = Protocol.HTTP) -> list[str]:
    return [p.url for p in parse_text(text, default).proxies]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("1.2.3.4:8080", "http://1.2.3.4:8080"),
        ("  1.2.3.4 : 8080  ", "http://1.2.3.4:8080"),
        ("1.2.3.4\t3128", "http://1.2.3.4:3128"),
        ("http://1.2.3.4:80", "http://1.2.3.4:80"),
        ("https://1.2.3.4:443", "https://1.2.3.4:443"),
        ("socks4://1.2.3.4:1080", "socks4://1.2.3.4:1080"),
        ("socks5://1.2.3.4:1080", "socks5://1.2.3.4:1080"),
        ("SOCKS5H://1.2.3.4:1080", "socks5://1.2.3.4:1080"),
        ("socks5://user:p4ss@1.2.3.4:1080", "socks5://user:p4ss@1.2.3.4:1080"),
        ("http://bob:@10.0.0.1:8080", "http://bob:@10.0.0.1:8080"),
        ("[2001:db8::1]:8080", "http://[2001:db8::1]:8080"),
        ("socks5://[::1]:1080", "socks5://[::1]:1080"),
        ("proxy.example.com:3128", "http://proxy.example.com:3128"),
        ("localhost:3128", "http://localhost:3128"),
        ("<tr><td>5.6.7.8</td><td>3128</td></tr>", "http://5.6.7.8:3128"),
        ('{"ip": "9.9.9.9", "port": 53}', "http://9.9.9.9:53"),
        ('{"proxy": "socks5://9.9.9.9:1080"}', "socks5://9.9.9.9:1080"),
        ("working: 1.1.1.1:80 (fast)", "http://1.1.1.1:80"),
    ],
)
def test_each_format(line: str, expected: str) -> None:
    assert urls(line) == [expected]


def test_bare_lines_take_the_default_protocol() -> None:
    assert urls("1.2.3.4:1080", Protocol.SOCKS5) == ["socks5://1.2.3.4:1080"]


def test_many_per_line_and_across_lines() -> None:
    text = "1.1.1.1:80, 2.2.2.2:81; 3.3.3.3:82\n<li>4.4.4.4:83</li>\n"
    assert urls(text) == [
        "http://1.1.1.1:80",
        "http://2.2.2.2:81",
        "http://3.3.3.3:82",
        "http://4.4.4.4:83",
    ]


def test_duplicates_are_counted_not_repeated() -> None:
    report = parse_text("1.2.3.4:80\nhttp://1.2.3.4:80\n1.2.3.4:81\n")
    assert [p.url for p in report.proxies] == ["http://1.2.3.4:80", "http://1.2.3.4:81"]
    assert report.duplicates == 1


def test_a_user_name_is_identity_and_a_password_is_not() -> None:
    text = "\n".join(
        [
            "socks5://user-country-us-session-41:pw@gw.example:7777",
            "socks5://user-country-us-session-42:pw@gw.example:7777",
            "socks5://user-country-us-session-43:pw@gw.example:7777",
            "socks5://user-country-us-session-43:changed@gw.example:7777",  # same proxy
            "socks5://gw.example:7777",
        ]
    )
    report = parse_text(text)
    assert len(report.proxies) == 4
    assert report.duplicates == 1


def test_host_names_are_one_proxy_whatever_their_case() -> None:
    report = parse_text("GW.Example:80\ngw.example:80\nhttp://gw.EXAMPLE:80\n")
    assert [p.url for p in report.proxies] == ["http://gw.example:80"]
    assert report.duplicates == 2


@pytest.mark.parametrize(
    "text",
    [
        "",
        "a",
        "a\n",
        "a\r\nb",
        "a\rb\n\nc",
        "a\x0bb\x0cc\x1cd\x1de\x1ef\x85g\u2028h\u2029i",
        "\n\r\n",
    ],
)
def test_lines_are_what_splitlines_makes(text: str) -> None:
    """Lines are read one at a time, and split where a list split them before."""
    assert list(lines_of(text)) == text.splitlines()
    assert parse_text(text).lines == len(text.splitlines())


def test_sources_are_merged_by_identity_and_keep_their_order() -> None:
    """Across sources as within one: a user name is identity, a password and
    a host name's case are not; the first of each stays, in order."""
    first = parse_text(
        "socks5://u1:pw@gw.example:7777\nsocks5://u2:pw@gw.example:7777\n1.2.3.4:80\n"
    )
    second = parse_text(
        "socks5://u2:changed@GW.example:7777\n1.2.3.4:80\n5.6.7.8:3128\n"
        "socks5://u3:p:w@gw.example:7777\n"
    )
    merged = ParseReport()
    merged.merge(first)
    merged.merge(second)
    assert [p.url for p in merged.proxies] == [
        "socks5://u1:pw@gw.example:7777",
        "socks5://u2:pw@gw.example:7777",
        "http://1.2.3.4:80",
        "http://5.6.7.8:3128",
        "socks5://u3:p:w@gw.example:7777",
    ]
    assert merged.duplicates == 2
    assert merged.summary()["proxies"] == 5


def test_a_proxy_comes_back_whole_from_its_url() -> None:
    """Candidates are held as URLs and made again when chunked: every field
    the parser gave must survive, credentials and IPv6 included."""
    text = "\n".join(
        [
            "1.2.3.4:8080",
            "https://Proxy.Example.com:443",
            "socks4://10.0.0.1:1080",
            "socks5h://user:p:a:ss@[2001:DB8::1]:1080",
            "http://user:@5.6.7.8:3128",
            "connect://5.6.7.9:3128",
        ]
    )
    proxies = parse_text(text).proxies
    assert len(proxies) == 6
    for proxy in proxies:
        assert Proxy.from_url(proxy.url) == proxy
        assert Proxy.from_url(proxy.url).to_item() == proxy.to_item()
    assert proxies[3].host == "2001:db8::1"
    assert proxies[3].password == "p:a:ss"


def test_a_list_parsed_in_pieces_reads_as_one() -> None:
    """Pieces folded together are the whole list: the same proxies in the
    same order, duplicates across pieces counted, errors on their own lines."""
    text = "\n".join(
        [
            "# list",
            "1.2.3.4:80",
            "1.2.3.5:80",
            "",
            "1.2.3.4:80",  # a duplicate from an earlier piece
            "300.1.1.1:80",
            "socks5://u:p@gw.example:1080",
            "socks5://u:other@GW.example:1080",
            "words",
            "1.2.3.6:99999",
        ]
    )
    whole = parse_text(text)
    folded = ParseReport()
    for piece in parse_pieces(text, lines_per_piece=3):
        folded.merge(piece)
    assert [p.url for p in folded.proxies] == [p.url for p in whole.proxies]
    assert len(folded.proxies) == 3
    assert folded.summary() == whole.summary()
    assert folded.duplicates == 2
    assert [(e.line, e.reason) for e in folded.errors] == [(e.line, e.reason) for e in whole.errors]
    assert [e.line for e in folded.errors] == [6, 10]


def test_same_address_other_protocol_is_another_proxy() -> None:
    assert len(parse_text("http://1.2.3.4:80\nsocks5://1.2.3.4:80\n").proxies) == 2


def test_every_line_is_accounted_for() -> None:
    text = "\n".join(
        [
            "# a comment",
            "",
            "1.2.3.4:80",
            "1.2.3.4:99999",  # port out of range
            "300.1.1.1:80",  # bad octet
            "ftp://1.2.3.4:21",  # unsupported scheme
            "1.2.3.4",  # no port
            "just some words",
            "[2001:db8::zz]:80",  # bad IPv6
        ]
    )
    report = parse_text(text)
    assert [p.url for p in report.proxies] == ["http://1.2.3.4:80"]
    assert report.comment_lines == 1
    assert report.blank_lines == 1
    assert report.ignored_lines == 1
    reasons = {e.line: e.reason for e in report.errors}
    assert reasons == {
        4: "port 99999 out of range 1-65535",
        5: "bad IPv4 address 300.1.1.1",
        6: "unsupported scheme 'ftp'",
        7: "no host:port found",
        9: "no host:port found",
    }
    assert report.lines == 9
    accounted = (
        len(report.proxies)
        + report.comment_lines
        + report.blank_lines
        + report.ignored_lines
        + len({e.line for e in report.errors})
    )
    assert accounted == report.lines


def test_error_names_line_and_text() -> None:
    (error,) = parse_lines(["ok", "9.9.9.9:0"]).errors
    assert str(error) == "line 2: port 0 out of range 1-65535: '9.9.9.9:0'"


def test_ipv6_is_normalised_for_dedup() -> None:
    report = parse_text("[2001:DB8:0::1]:80\n[2001:db8::1]:80\n")
    assert [p.url for p in report.proxies] == ["http://[2001:db8::1]:80"]
    assert report.duplicates == 1


def test_size_cap() -> None:
    with pytest.raises(InputTooLarge, match="over the cap of 10 bytes"):
        parse_text("1.2.3.4:8080\n", max_bytes=10)


def test_json_array_keyed_by_protocol_takes_the_key_protocol() -> None:
    text = '{"http": ["1.1.1.1:80", "1.1.1.2:8080"], "socks5": ["2.2.2.2:1080"], "socks4": []}'
    report = parse_text(text)
    assert [p.url for p in report.proxies] == [
        "http://1.1.1.1:80",
        "http://1.1.1.2:8080",
        "socks5://2.2.2.2:1080",
    ]
    assert report.errors == []


def test_json_objects_one_field_a_line_count_no_spurious_errors() -> None:
    objects = [
        {"proxy": f"socks4://1.2.3.{i}:80", "ip": f"1.2.3.{i}", "port": 80, "anonymity": "elite"}
        for i in range(1, 51)
    ]
    text = json.dumps(objects, indent=2)  # "ip": "1.2.3.4", on lines of their own
    report = parse_text(text, Protocol.HTTP)
    assert len(report.proxies) == 50
    assert {p.protocol for p in report.proxies} == {Protocol.SOCKS4}
    assert report.errors == []
    assert report.lines == len(text.splitlines())


def test_json_objects_with_separate_fields() -> None:
    text = json.dumps(
        {
            "data": [
                {"ip": "5.5.5.5", "port": "3128", "protocols": ["socks5", "socks4"]},
                {"host": "6.6.6.6", "port": 8080, "type": "https"},
                {"ip": "7.7.7.7", "port": 99999},
            ]
        }
    )
    report = parse_text(text)
    assert [p.url for p in report.proxies] == ["socks5://5.5.5.5:3128", "https://6.6.6.6:8080"]
    (error,) = report.errors
    assert str(error) == "entry 3: port 99999 out of range 1-65535: '7.7.7.7:99999'"


def test_annotated_lines_and_html_tables_like_the_public_lists() -> None:
    annotated = "Proxy list updated at Tue, 24 Nov\n\n1.2.3.4:8080 US-A-S +\n5.6.7.8:3128 DE-H -\n"
    report = parse_text(annotated)
    assert [p.url for p in report.proxies] == ["http://1.2.3.4:8080", "http://5.6.7.8:3128"]
    assert report.errors == []
    table = (
        "<table><tr><th>IP Address</th><th>Port</th><th>Code</th></tr>\n"
        "<tr><td>9.8.7.6</td><td>80</td><td>US</td></tr>\n"
        "<tr><td>9.8.7.5</td><td>8080</td><td>FR</td></tr></table>\n"
    )
    report = parse_text(table)
    assert [p.url for p in report.proxies] == ["http://9.8.7.6:80", "http://9.8.7.5:8080"]
    assert report.errors == []


def test_text_that_only_looks_like_json_is_scanned_as_text() -> None:
    report = parse_text("[not json] 1.2.3.4:80\n")
    assert [p.url for p in report.proxies] == ["http://1.2.3.4:80"]


def test_an_address_in_other_scripts_digits_is_a_bad_line_not_a_proxy() -> None:
    """Arabic-Indic and other non-ASCII digits match a regex's \\d; as an
    address they named a host no worker could connect to."""
    report = parse_text("38.5.\u0663.80:8080\n1.2.3.4:80\n")
    assert [p.url for p in report.proxies] == ["http://1.2.3.4:80"]
    assert [(e.line, e.reason) for e in report.errors] == [(1, "bad IPv4 address 38.5.\u0663.80")]
