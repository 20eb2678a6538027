"""Paid proxies, on real servers: dante-server (username method, system
users made by the fixture), microsocks with and without -u/-P, tinyproxy
BasicAuth. Right, wrong and missing credentials each
get the right verdict, and a refusal names the proxy, never the judge. Three
session user names on one gateway are three proxies."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from proxyrefresh.models import Anonymity
from tests.conftest import Bed, run_cli
from tests.harness.testbed import LocalProxy

pytestmark = pytest.mark.integration
SESSIONS = {f"prsession-{n}": "s3ssion-pw" for n in (41, 42, 43)}


def with_auth(proxy: LocalProxy, user: str, password: str) -> str:
    scheme, rest = proxy.url.split("://")
    return f"{scheme}://{user}:{password}@{rest}"


@pytest.fixture(scope="module")
def paid(bed: Bed) -> dict[str, LocalProxy]:
    return {
        "tinyproxy": bed.testbed.tinyproxy("127.0.0.60", Anonymity.ELITE, auth=("user", "secret")),
        "microsocks": bed.testbed.microsocks("127.0.0.63", auth=("user", "secret")),
        "microsocks-open": bed.testbed.microsocks("127.0.0.64"),
        "dante": bed.testbed.dante({"prdante": "secret", **SESSIONS}),
    }


def check(bed: Bed, write_list: Callable[..., str], *urls: str) -> dict[str, dict[str, object]]:
    result = run_cli("check", write_list(*urls), "-j", bed.judge, "--timeout", "3", "--all")
    assert result.returncode == 0, result.stderr
    return {str(row["proxy"]): row for row in map(json.loads, result.stdout.splitlines())}


@pytest.mark.parametrize("name", ["tinyproxy", "microsocks", "dante"])
def test_right_wrong_and_missing_credentials(
    bed: Bed, write_list: Callable[..., str], paid: dict[str, LocalProxy], name: str
) -> None:
    proxy = paid[name]
    user = "prdante" if name == "dante" else "user"
    right = with_auth(proxy, user, "secret")
    # A wrong password for the same user is the same proxy: a run of its own.
    (good,) = check(bed, write_list, right).values()
    (wrong,) = check(bed, write_list, with_auth(proxy, user, "wrong")).values()
    (missing,) = check(bed, write_list, proxy.url).values()
    assert good["alive"] is True, good
    if name == "tinyproxy":
        assert wrong["error"] == "proxy answered HTTP 401 Unauthorized"
        assert str(missing["error"]).startswith("proxy refused: authentication required (HTTP 407")
    for row in (wrong, missing):
        assert row["alive"] is False
        assert str(row["error"]).startswith("proxy "), row  # the proxy's fault...
        assert "judge" not in str(row["error"]), row  # ...never the judge's


def test_microsocks_without_auth_needs_none(
    bed: Bed, write_list: Callable[..., str], paid: dict[str, LocalProxy]
) -> None:
    (row,) = check(bed, write_list, paid["microsocks-open"].url).values()
    assert row["alive"] is True
    assert row["anonymity"] == "elite"


def test_session_user_names_on_one_gateway_are_separate_proxies(
    bed: Bed, write_list: Callable[..., str], paid: dict[str, LocalProxy]
) -> None:
    urls = [with_auth(paid["dante"], user, pw) for user, pw in SESSIONS.items()]
    rows = check(bed, write_list, *urls, with_auth(paid["dante"], "prsession-43", "other"))
    assert sorted(rows) == sorted(urls)  # three checked; the fourth was the third again
    assert all(row["alive"] is True for row in rows.values())
