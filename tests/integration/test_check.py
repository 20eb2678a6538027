"""``proxyrefresh check`` against real proxies on loopback.

tinyproxy (transparent, anonymous, elite, and CONNECT), squid with
forwarded_for on, pproxy SOCKS4/SOCKS5, a refused port, a black hole and a
proxy that forges the judge's answer; the judge on its own address.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from proxyrefresh.models import Anonymity
from tests.conftest import Bed, run_cli
from tests.harness.testbed import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def checked(bed: Bed, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, object]]:
    path = tmp_path_factory.mktemp("check") / "all.txt"
    path.write_text("\n".join(p.url for p in bed.proxies) + "\n")
    result = run_cli("check", str(path), "--judge", bed.judge, "--timeout", "3", "--all")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    return {str(row["proxy"]): row for row in rows}


@pytest.mark.parametrize(
    "name",
    [
        "tinyproxy-transparent",
        "tinyproxy-anonymous",
        "tinyproxy-elite-127.0.0.13",
        "squid",
        "pproxy-socks5",
        "pproxy-socks4",
        "tinyproxy-elite-127.0.0.17-connect",
        "refused",
        "blackhole",
        "forger",
    ],
)
def test_each_proxy_is_classified(
    bed: Bed, checked: dict[str, dict[str, object]], name: str
) -> None:
    proxy = bed.by_name(name)
    row = checked[proxy.url]
    if proxy.expect is None:
        assert row["alive"] is False
        assert "anonymity" not in row
        assert row["error"]
    else:
        assert row["alive"] is True, row
        assert row["anonymity"] == proxy.expect.value
        assert row["exit_ip"] == proxy.exit_ip
        assert 0 < float(row["latency_ms"]) < 3000  # type: ignore[arg-type]


def test_dead_proxies_say_why(bed: Bed, checked: dict[str, dict[str, object]]) -> None:
    assert "connection failed" in str(checked[bed.by_name("refused").url]["error"])
    assert checked[bed.by_name("blackhole").url]["error"] == "timed out after 3s"
    assert "forged answer" in str(checked[bed.by_name("forger").url]["error"])


def test_transparent_names_the_leaking_header(
    bed: Bed, checked: dict[str, dict[str, object]]
) -> None:
    assert checked[bed.by_name("tinyproxy-transparent").url]["revealing_headers"] == ["X-Tinyproxy"]
    assert checked[bed.by_name("squid").url]["revealing_headers"] == ["X-Forwarded-For"]
    assert checked[bed.by_name("tinyproxy-anonymous").url]["revealing_headers"] == ["Via"]


def test_txt_output_lists_what_passes_the_filter(bed: Bed, write_list: Callable[..., str]) -> None:
    path = write_list(*(p.url for p in bed.proxies))
    result = run_cli(
        "check",
        path,
        "-j",
        bed.judge,
        "--timeout",
        "3",
        "--min-anonymity",
        "anonymous",
        "--format",
        "txt",
    )
    assert result.returncode == 0, result.stderr
    expected = {p.url for p in bed.proxies if p.expect and p.expect.at_least(Anonymity.ANONYMOUS)}
    assert set(result.stdout.split()) == expected
    assert "checked 10, live 7, passed 5" in result.stderr
    assert "anonymity: transparent 2, anonymous 1, elite 4" in result.stderr


def test_stdin_and_malformed_lines_are_reported(bed: Bed) -> None:
    elite = bed.by_name("tinyproxy-elite-127.0.0.13").url
    text = f"# list\n{elite}\n1.2.3.4:99999\nnot a proxy line\n1.2.3.4\n"
    result = run_cli("check", "-", "-j", bed.judge, "--timeout", "3", stdin=text)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["proxy"] for line in result.stdout.splitlines()] == [elite]
    assert "line 3: port 99999 out of range 1-65535" in result.stderr
    assert "line 5: no host:port found" in result.stderr
    assert "5 lines, 1 candidates, 0 duplicates, 2 errors, 1 lines without a proxy" in result.stderr


def test_target_checks(bed: Bed, write_list: Callable[..., str]) -> None:
    elite = bed.by_name("tinyproxy-elite-127.0.0.13").url
    path = write_list(elite)
    ok = run_cli("check", path, "-j", bed.judge, "--target", f"{bed.judge}healthz=200")
    (row,) = [json.loads(line) for line in ok.stdout.splitlines()]
    assert row["targets"][0]["ok"] is True
    assert row["targets"][0]["status"] == 200
    wrong = run_cli("check", path, "-j", bed.judge, "--target", f"{bed.judge}healthz=204", "--all")
    (row,) = [json.loads(line) for line in wrong.stdout.splitlines()]
    assert row["alive"] is True
    assert row["targets"][0] == {
        "url": f"{bed.judge}healthz",
        "ok": False,
        "status": 200,
        "latency_ms": row["targets"][0]["latency_ms"],
    }
    assert "passed 0" in wrong.stderr


def test_bad_input_exits_2(write_list: Callable[..., str], tmp_path: Path) -> None:
    missing = run_cli("check", str(tmp_path / "nope.txt"), "-j", "http://127.0.0.2:1/")
    assert missing.returncode == 2
    assert "No such file" in missing.stderr
    empty = run_cli("check", write_list("# nothing", "words"), "-j", "http://127.0.0.2:1/")
    assert empty.returncode == 2
    assert "no candidate proxies" in empty.stderr
    judge = "http://127.0.0.2:1/"
    big = run_cli("check", write_list("1.2.3.4:80"), "-j", judge, "--max-bytes", "4")
    assert big.returncode == 2
    assert "over the cap of 4 bytes" in big.stderr
    usage = run_cli("check", write_list("1.2.3.4:80"), "--format", "xml", "-j", judge)
    assert usage.returncode == 2
    bad_flag = run_cli("check", write_list("1.2.3.4:80"), "--concurrency", "0", "-j", judge)
    assert bad_flag.returncode == 2
    assert "concurrency" in bad_flag.stderr


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (
            ["--concurrency", "0"],
            "--concurrency (or PROXYREFRESH_CONCURRENCY): input should be "
            "greater than or equal to 1",
        ),
        (
            ["--timeout", "-1"],
            "--timeout (or PROXYREFRESH_TIMEOUT): input should be greater than 0",
        ),
        (["-j", "notaurl"], "--judge (or PROXYREFRESH_JUDGES): 'notaurl' is not an http(s) URL"),
    ],
)
def test_option_errors_are_one_line_naming_the_option(
    write_list: Callable[..., str], flags: list[str], said: str
) -> None:
    args = ["-j", "http://127.0.0.2:1/", *flags] if "-j" not in flags else flags
    result = run_cli("check", write_list("1.2.3.4:80"), *args)
    assert result.returncode == 2
    assert result.stderr == f"proxyrefresh: {said}\n"


def test_dead_judge_exits_3_naming_it(write_list: Callable[..., str]) -> None:
    judge = f"http://127.0.0.2:{free_port('127.0.0.2')}/"
    result = run_cli("check", write_list("1.2.3.4:80"), "-j", judge, "--timeout", "2")
    assert result.returncode == 3
    assert f"no judge answered a direct request ({judge}: connection failed" in result.stderr
    # No judge at all is a usage error (2), like any missing option; 3 says
    # judges were given and none answered.
    none = run_cli("check", write_list("1.2.3.4:80"))
    assert none.returncode == 2
    assert none.stderr == (
        "proxyrefresh: no judge configured: give --judge URL (or PROXYREFRESH_JUDGES)\n"
    )


def test_an_answer_with_a_status_that_is_no_number_is_not_http(
    bed: Bed, write_list: Callable[..., str]
) -> None:
    """A checked proxy is anyone's, and may say anything: a status code
    with a superscript two (latin-1 0xb2, a digit to str.isdigit, no number
    to int) is "not an HTTP answer" like any other, and leaves no
    traceback in the log (a worker pod's, where every such proxy would)."""
    liar = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = liar.accept()
                with conn:
                    conn.recv(65536)
                    conn.sendall(b"HTTP/1.1 \xb200 OK\r\nContent-Length: 2\r\n\r\nxx")

    threading.Thread(target=answer, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{liar.getsockname()[1]}"
        result = run_cli("check", write_list(url), "-j", bed.judge, "--timeout", "3", "--all")
    finally:
        liar.close()
    assert result.returncode == 0, result.stderr
    (row,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert (row["alive"], row["error"]) == (False, "forged answer: not an HTTP answer")
    assert "Traceback" not in result.stderr, result.stderr


def test_progress_bar_only_on_a_terminal(bed: Bed, write_list: Callable[..., str]) -> None:
    path = write_list(bed.by_name("tinyproxy-elite-127.0.0.13").url)
    piped = run_cli("check", path, "-j", bed.judge)
    assert "checking" not in piped.stderr
    primary, secondary = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxyrefresh.front.cli", "check", path, "-j", bed.judge],
        stdout=subprocess.PIPE,
        stderr=secondary,
        env={**os.environ, "COLUMNS": "100"},
    )
    os.close(secondary)
    seen = b""
    while True:
        try:
            chunk = os.read(primary, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    proc.wait(timeout=60)
    os.close(primary)
    assert proc.returncode == 0
    assert b"checking" in seen
    assert b"1/1" in seen


def test_latency_is_the_proxys_not_the_event_loops(bed: Bed, tmp_path: Path) -> None:
    """Proxies answering 0, 1 and 2 s late, among 1,000 black holes at
    C=512: each latency within 30 ms of its delay plus what the proxy takes
    when it is not delayed (the better of two undelayed proxies: one sample
    of it, taken while the machine's other suite stalled, made the
    reference itself 45 ms late once)."""
    slow = {delay: bed.testbed.slow("127.0.0.46", delay) for delay in (0.0, 1.0, 2.0)}
    again = bed.testbed.slow("127.0.0.46", 0.0)
    holes = bed.testbed.blackholes("127.0.0.47", 1000)
    urls = [h.url for h in holes]
    for i, proxy in enumerate([*slow.values(), again]):  # spread among the holes
        urls.insert(100 + 250 * i, proxy.url)
    path = tmp_path / "slow.txt"
    path.write_text("\n".join(urls) + "\n")
    result = run_cli(
        "check", str(path), "--judge", bed.judge, "--timeout", "5", "--concurrency", "512"
    )
    assert result.returncode == 0, result.stderr
    latency = {
        row["proxy"]: row["latency_ms"] for row in map(json.loads, result.stdout.split("\n")[:-1])
    }
    assert set(latency) == {p.url for p in [*slow.values(), again]}
    assert latency[again.url] < 100
    base = min(latency[slow[0.0].url], latency[again.url])
    print("\n  latency by delay: " + ", ".join(
        f"{d:g} s: {latency[slow[d].url]:.1f} ms" for d in slow
    ))  # fmt: skip
    assert base < 100
    for delay in (1.0, 2.0):
        assert abs(latency[slow[delay].url] - (delay * 1000 + base)) <= 30, latency
