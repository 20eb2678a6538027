"""The tenant-safety rules as pure functions: which addresses a fetch may
reach, which Secrets a source may use and where, what a worker's Redis user
may touch, what is hidden from logs. No packet leaves this process: the
addresses below are classified, never connected to."""

from __future__ import annotations

import inspect
import ipaddress
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from proxyrefresh import constants as c
from proxyrefresh import redact
from proxyrefresh.constants import RUNS
from proxyrefresh.fanout import access
from proxyrefresh.netguard import AddressRefused, NetworkGuard, kind_of
from proxyrefresh.operator import merge
from proxyrefresh.operator.credentials import (
    CredentialsRefused,
    from_secret,
    host_allowed,
    parse_hosts,
)
from proxyrefresh.operator.list_reader import Gathered
from proxyrefresh.redact import redis_problem
from proxyrefresh.settings import NetworkSettings

GUARD = NetworkGuard()


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.9.9.9", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("fd12:3456::1", "unique-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("100.64.0.1", "reserved"),  # carrier-grade NAT
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped: judged as the IPv4 address
        ("::ffff:10.1.2.3", "private"),
        # NAT64 (RFC 6052) and 6to4 reach the IPv4 address they embed.
        ("64:ff9b::a9fe:a9fe", "metadata"),
        ("64:ff9b::7f00:1", "loopback"),
        ("64:ff9b::a00:1", "private"),
        ("64:ff9b::808:808", None),  # a public address behind a translator
        ("2002:a9fe:a9fe::1", "metadata"),
        ("2002:c0a8:101::", "private"),
        ("2002:7f00:1::1", "loopback"),
        ("2002:808:808::1", None),
        ("64:ff9b:1::808:808", "private"),  # RFC 8215: local use, whatever it embeds
        ("::a00:1", "reserved"),  # IPv4-compatible: deprecated, routed nowhere
        ("8.8.8.8", None),
        ("2606:4700::1111", None),
    ],
)
def test_every_kind_of_internal_address_is_named(address: str, kind: str | None) -> None:
    assert kind_of(ipaddress.ip_address(address)) == kind
    assert GUARD.refusal(address) == kind


def test_the_installer_can_allow_networks_or_turn_the_guard_off() -> None:
    guard = NetworkGuard.build(True, ["127.0.0.5/32", "10.20.0.0/16"], ["100.96.0.0/11"])
    assert guard.refusal("127.0.0.5") is None
    assert guard.refusal("127.0.0.6") == "loopback"
    assert guard.refusal("10.20.3.4") is None
    assert guard.refusal("10.21.3.4") == "private"
    assert guard.refusal("100.100.0.1") == "cluster-internal"
    assert NetworkGuard(enabled=False).refusal("169.254.169.254") is None


def test_a_refused_url_names_the_address_and_the_setting() -> None:
    with pytest.raises(
        AddressRefused, match=r"169\.254\.169\.254 is a metadata address.*allowedNetworks"
    ):
        GUARD.check_url("http://169.254.169.254/latest/meta-data/")
    with pytest.raises(AddressRefused, match="loopback"):
        GUARD.check_url("http://[::1]:8080/")
    GUARD.check_url("http://lists.example/http.txt")  # names are checked when resolved


def test_network_settings_reject_a_bad_network_and_reach_the_workers() -> None:
    with pytest.raises(ValueError, match="not-a-network"):
        NetworkSettings(allowed=["not-a-network"])
    env = {
        e["name"]: e["value"] for e in NetworkSettings(guard=False, internal=["10.96.0.0/12"]).env()
    }
    assert env["PROXYREFRESH_NETWORK_GUARD"] == "false"
    assert env["PROXYREFRESH_NETWORK_INTERNAL"] == '["10.96.0.0/12"]'


def secret(labels: dict[str, str] | None = None, hosts: str | None = None) -> dict[str, object]:
    annotations = {c.ANNOTATION_ALLOWED_HOSTS: hosts} if hosts is not None else {}
    return {
        "metadata": {"name": "list-auth", "labels": labels or {}, "annotations": annotations},
        "data": {"Authorization": "Bearer s3cret"},
    }


OPTED_IN = {c.LABEL_SOURCE_CREDENTIALS: "true"}


def test_a_secret_must_opt_in_and_name_the_host() -> None:
    with pytest.raises(CredentialsRefused, match="has not opted in") as refused:
        from_secret(secret(hosts="lists.example"), "https://lists.example/a")
    assert "s3cret" not in str(refused.value)
    with pytest.raises(
        CredentialsRefused, match=r"not allow .* sent to https://evil\.example:443"
    ) as refused:
        from_secret(secret(OPTED_IN, "lists.example"), "https://evil.example/a")
    assert "s3cret" not in str(refused.value)
    creds = from_secret(secret(OPTED_IN, "lists.example, *.cdn.example"), "https://lists.example/")
    assert "s3cret" not in repr(creds)
    assert creds.headers_for("https://lists.example/a", "https://lists.example/") == {
        "Authorization": "Bearer s3cret"
    }


def test_headers_never_follow_a_redirect_to_another_host_or_to_plain_http() -> None:
    creds = from_secret(secret(OPTED_IN, "lists.example,mirror.example"), "https://lists.example/")
    first = "https://lists.example/list"
    assert creds.headers_for("https://mirror.example/list", first) == {}
    assert creds.headers_for("http://lists.example/list", first) == {}
    assert creds.headers_for("https://LISTS.example/other", first) != {}


def test_an_allowed_host_binds_its_scheme_and_port_too() -> None:
    """A bare name is https on 443; any other origin is named in full. The
    headers never reach the same host on another port or over plain http."""
    bare = secret(OPTED_IN, "lists.example, http://mirror.example:8080")
    for refused_url in ("http://lists.example/a", "https://lists.example:8443/a",
                        "https://mirror.example:8080/a", "http://mirror.example/a"):  # fmt: skip
        with pytest.raises(CredentialsRefused, match="a bare host name means https on port 443"):
            from_secret(bare, refused_url)
    creds = from_secret(bare, "http://mirror.example:8080/list")
    first = "http://mirror.example:8080/list"
    assert creds.headers_for("http://mirror.example:8080/b", first) != {}
    assert creds.headers_for("http://mirror.example:9090/b", first) == {}
    assert from_secret(bare, "https://LISTS.example:443/a").hosts


def test_host_patterns() -> None:
    patterns = parse_hosts("lists.example,\n *.cdn.example ,")
    assert patterns == ("lists.example", "*.cdn.example")
    assert host_allowed("lists.example.", patterns)
    assert host_allowed("a.b.cdn.example", patterns)
    assert not host_allowed("cdn.example", patterns)
    assert not host_allowed("evilcdn.example", patterns)
    assert not host_allowed("lists.example.evil", patterns)


def test_only_our_own_output_configmap_is_written() -> None:
    ours = {"metadata": {"labels": {c.LABEL_MANAGED_BY: c.MANAGED_BY, c.LABEL_POOL: "eu"}}}
    assert merge.managed(None, "eu")
    assert merge.managed(ours, "eu")
    assert not merge.managed(ours, "us")  # another pool's
    assert not merge.managed({"metadata": {"name": "coredns"}}, "eu")


def test_a_worker_redis_user_opens_its_run_only() -> None:
    rules = access.rules(RUNS.keys("abc"), "pw")
    assert rules[:2] == ["reset", "on"]
    # Its keys by name (cleanup deletes every one), never a pattern.
    keys = [r[1:] for r in rules if r.startswith("~")]
    assert keys == RUNS.keys("abc").all()
    assert all("*" not in key for key in keys)
    assert [r for r in rules if r.startswith("&")] == ["&proxyrefresh:{abc}:events"]
    # Nothing but the worker's own commands; no Lua of its own making.
    assert rules.index("-@all") < rules.index("+evalsha")
    assert not {"+@all", "+eval", "+script|load", "+keys", "+scan"} & set(rules)
    assert access.password("k", "abc") == access.password("k", "abc") != access.password("k", "abd")
    assert access.password("k", "abc") != access.password("other", "abc")
    url = access.run_url("rediss://op:opsecret@redis.svc:6380/2", "abc", "k", RUNS)
    assert url.startswith("rediss://proxyrefresh-run-abc:")
    assert url.endswith("@redis.svc:6380/2")
    assert "opsecret" not in url


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("redis://:hunter2@redis:6379/0", "redis://:***@redis:6379/0"),
        ("redis://user:hunter2@redis:6379/0", "redis://user:***@redis:6379/0"),
        ("redis://redis:6379/0", "redis://redis:6379/0"),
        ("socks5://u:p@1.2.3.4:1080", "socks5://u:***@1.2.3.4:1080"),
    ],
)
def test_urls_are_redacted(text: str, shown: str) -> None:
    assert redact.url(text) == shown
    assert redact.secrets_in(f"Error at {text} (retrying)") == f"Error at {shown} (retrying)"


def test_status_messages_are_one_short_line() -> None:
    text = "HTTP response headers: HTTPHeaderDict({'Audit-Id': 'x'})\nbody:\n  " + "y" * 500
    line = redact.one_line(text, 100)
    assert "\n" not in line
    assert len(line) == 100


def test_a_redis_outage_in_a_status_names_no_address() -> None:
    refused = RedisConnectionError(
        "Error 111 connecting to redis.infra.svc:6379. Connection refused."
    )
    assert redis_problem(refused) == "cannot connect"
    assert redis_problem(RedisTimeoutError("Timeout reading from 10.0.0.7:6379")) == "timed out"
    assert redis_problem(OSError("connect to 10.0.0.7 failed")) == "cannot connect"
    # A refusal's own words say what to fix, and name no host.
    noperm = ResponseError("NOPERM User op has no permissions to run the 'hmget' command")
    assert redis_problem(noperm) == str(noperm)


@pytest.mark.parametrize(("command", "port"), [("judge", 8080), ("rotate", 8089), ("ui", 8088)])
def test_servers_started_by_hand_listen_on_loopback_unless_told(command: str, port: int) -> None:
    """An unauthenticated rotator on every interface of a workstation is an
    open proxy: each server's default is loopback (the chart says 0.0.0.0)."""
    from proxyrefresh.front import cli

    default = inspect.signature(getattr(cli, command)).parameters["listen"].default
    assert default == f"127.0.0.1:{port}"


async def test_a_configmap_source_tells_nothing_of_a_configmap_that_did_not_opt_in(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The operator reads ConfigMaps its tenants may not: one that did not
    opt in gets the same answer as one that does not exist (no keys, no
    count of what it holds)."""
    from proxyrefresh.api import KeyRef, Source
    from proxyrefresh.netguard import NetworkGuard
    from proxyrefresh.operator import kube, scrape

    maps: dict[str, dict[str, Any]] = {
        "private": {"metadata": {"name": "private"}, "data": {"list": "1.2.3.4:80\n"}},
        "shared": {
            "metadata": {"name": "shared", "labels": {c.LABEL_SOURCE_LIST: "true"}},
            "data": {"list": "1.2.3.4:80\n5.6.7.8:80\n"},
        },
    }

    async def read_config_map(namespace: str, name: str) -> dict[str, Any] | None:
        return maps.get(name)

    monkeypatch.setattr(kube, "read_config_map", read_config_map)
    rules = scrape.FetchRules(guard=NetworkGuard())
    answers = []
    for name, key in (("private", "list"), ("private", "nope"), ("absent", "list")):
        source = Source(config_map_ref=KeyRef(name=name, key=key))
        sink = Gathered()
        status = await scrape.scrape_one(source, "t", rules, None, sink)
        assert (status.ok, sink.count) == (False, 0)
        answers.append(status.message.replace(name, "X"))
    assert answers == [f"ConfigMap X not found, or not labelled {c.LABEL_SOURCE_LIST}=true"] * 3
    status = await scrape.scrape_one(
        Source(config_map_ref=KeyRef(name="shared", key="nope")), "t", rules, None, Gathered()
    )
    assert status.message == "ConfigMap shared has no key nope"
    status = await scrape.scrape_one(
        Source(config_map_ref=KeyRef(name="shared", key="list")), "t", rules, None, Gathered()
    )
    assert (status.ok, status.candidates) == (True, 2)
