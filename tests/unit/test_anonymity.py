"""The anonymity rules of PRODUCT.md, on judge echoes."""

from __future__ import annotations

import pytest

from proxyrefresh.models import Anonymity
from proxyrefresh.worker.anonymity import addresses_in, classify

REAL = ["198.51.100.7"]
EXIT = "203.0.113.5"


@pytest.mark.parametrize(
    ("headers", "expected", "named"),
    [
        ({"X-Forwarded-For": "198.51.100.7"}, Anonymity.TRANSPARENT, ["X-Forwarded-For"]),
        ({"X-Real-IP": "198.51.100.7"}, Anonymity.TRANSPARENT, ["X-Real-IP"]),
        ({"Forwarded": 'for="198.51.100.7:5555";proto=http'}, Anonymity.TRANSPARENT, ["Forwarded"]),
        ({"Client-IP": "198.51.100.7"}, Anonymity.TRANSPARENT, ["Client-IP"]),
        ({"X-Tinyproxy": "198.51.100.7"}, Anonymity.TRANSPARENT, ["X-Tinyproxy"]),
        (
            {"X-Anything-At-All": "via 198.51.100.7, ok"},
            Anonymity.TRANSPARENT,
            ["X-Anything-At-All"],
        ),
        ({"X-Forwarded-For": "::ffff:198.51.100.7"}, Anonymity.TRANSPARENT, ["X-Forwarded-For"]),
        ({"Via": "1.1 squid"}, Anonymity.ANONYMOUS, ["Via"]),
        ({"Forwarded": "for=unknown"}, Anonymity.ANONYMOUS, ["Forwarded"]),
        ({"X-Forwarded-For": "10.9.9.9"}, Anonymity.ANONYMOUS, ["X-Forwarded-For"]),
        ({"Proxy-Connection": "keep-alive"}, Anonymity.ANONYMOUS, ["Proxy-Connection"]),
        ({"X-Proxy-ID": "123"}, Anonymity.ANONYMOUS, ["X-Proxy-ID"]),
        ({"Host": "judge", "User-Agent": "x", "Accept": "*/*"}, Anonymity.ELITE, []),
        # Host is what we wrote: a judge addressed by our own IP (one on the
        # worker's node) reveals nothing through it.
        ({"Host": "198.51.100.7:8080"}, Anonymity.ELITE, []),
        ({"Host": "198.51.100.7:8080", "Via": "1.1 p"}, Anonymity.ANONYMOUS, ["Via"]),
        # a longer address that merely starts with ours is not ours
        ({"X-Forwarded-For": "198.51.100.77"}, Anonymity.ANONYMOUS, ["X-Forwarded-For"]),
    ],
)
def test_forwarding_proxy(headers: dict[str, str], expected: Anonymity, named: list[str]) -> None:
    verdict = classify(REAL, EXIT, headers, tunnel=False)
    assert verdict.anonymity is expected
    assert verdict.revealing_headers == named


def test_exit_ip_equal_to_real_ip_is_transparent() -> None:
    assert classify(REAL, REAL[0], {}, tunnel=False).anonymity is Anonymity.TRANSPARENT
    assert classify(REAL, REAL[0], {}, tunnel=True).anonymity is Anonymity.TRANSPARENT


def test_tunnel_counts_only_the_exit_ip() -> None:
    # A tunnel cannot add headers; whatever arrives is the judge side's own.
    verdict = classify(REAL, EXIT, {"Via": "1.1 ingress"}, tunnel=True)
    assert verdict.anonymity is Anonymity.ELITE


def test_ipv6_real_ip() -> None:
    verdict = classify(["2001:db8::7"], EXIT, {"X-Forwarded-For": "2001:DB8:0::7"}, False)
    assert verdict.anonymity is Anonymity.TRANSPARENT


def test_addresses_are_whole_tokens() -> None:
    found = {str(a) for a in addresses_in("10.0.0.11, 10.0.0.1:80 and [2001:db8::1]")}
    assert found == {"10.0.0.11", "10.0.0.1", "2001:db8::1"}
