"""``proxyrefresh rotate`` against real proxies on loopback: tinyproxy,
squid, pproxy SOCKS4/5, refused ports and black holes, all in one pool."""

from __future__ import annotations

import json
import socket
import socketserver
import struct
import subprocess
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests

from proxyrefresh.models import Anonymity
from tests.conftest import Bed, run_cli, wait_for
from tests.harness import rotator as rot
from tests.harness.rotator import ROTATE_NAMESPACE, Rotating
from tests.harness.testbed import LocalProxy, RedisServer

pytestmark = pytest.mark.integration
NS = ROTATE_NAMESPACE


@pytest.fixture
def live(bed: Bed) -> list[LocalProxy]:
    return [p for p in bed.proxies if p.expect is not None]


def curl_args(proxy: LocalProxy) -> list[str]:
    """How curl goes through ``proxy`` itself (the baseline for what its target sees)."""
    scheme, _, rest = proxy.url.partition("://")
    if scheme == "https":  # a CONNECT proxy: curl tunnels through it
        return ["-x", f"http://{rest}", "--proxytunnel"]
    return ["-x", f"{'socks5h' if scheme == 'socks5' else scheme}://{rest}"]


def judged(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "--max-time", "30", *args], capture_output=True, text=True, timeout=120
    )


def test_500_requests_leave_through_live_upstreams_and_teach_the_pool(
    rotating: Rotating, live: list[LocalProxy]
) -> None:
    bed = rotating.bed
    dead = [
        bed.by_name("refused-127.0.0.20"),
        bed.by_name("blackhole-127.0.0.21"),
        *bed.testbed.refused("127.0.0.23"),
        *bed.testbed.blackholes("127.0.0.24"),
    ]
    assert len(dead) * 3 >= len(live + dead)  # a third of the pool, or more
    rotating.fill(live + dead)
    # One retry per dead upstream: a request then always finds a live one,
    # even if every dead one comes up before it.
    r = rotating.start(
        "--retries",
        str(len(dead)),
        "--answer-timeout",
        "1",
        "--connect-timeout",
        "1",
    )
    # What each upstream's target sees when curl goes through it directly.
    baseline: dict[str, dict[str, str]] = {}
    for proxy in live:
        (seen,) = judged(curl(*curl_args(proxy), bed.judge, "-w", "\n").stdout)
        baseline[seen["remote_addr"]] = seen["headers"]
    assert len(baseline) == len(live)

    urls = [f"{bed.judge}?n={i}" for i in range(250)]
    through_curl = curl("-x", r.proxy, *urls, "-w", "\n")  # one kept-alive connection
    assert through_curl.returncode == 0, through_curl.stderr
    answers = judged(through_curl.stdout)
    assert len(answers) == 250
    for seen in answers:
        assert seen["headers"] == baseline[seen["remote_addr"]], seen

    session = requests.Session()
    session.proxies = {"http": r.proxy}
    sent = {k: v for k, v in session.headers.items() if k.lower() != "connection"}
    curl_own = {"Host", "User-Agent", "Accept"}
    for i in range(250):
        response = session.get(f"{bed.judge}?m={i}", timeout=30)
        assert response.status_code == 200, response.text
        seen = response.json()
        by_upstream = {k: v for k, v in baseline[seen["remote_addr"]].items() if k not in curl_own}
        expected = {"Host": seen["headers"]["Host"], **sent, **by_upstream}
        assert seen["headers"] == expected, seen
        answers.append(seen)

    spread = Counter(seen["remote_addr"] for seen in answers)
    assert set(spread) == set(baseline)
    assert min(spread.values()) >= 500 / len(live) / 2, spread  # fair within a factor of 2
    assert {e.proxy for e in rot.entries(rotating.redis.url, NS, rotating.pool)} == {
        p.url for p in live
    }
    health = r.health()
    assert health["requests"] == 500
    # Each dead upstream was tried until its third failure, and never again.
    assert health["upstream_failures"] == 3 * len(dead), health


def tls_exit(tls: rot.TlsServer, r: rot.Rotator, protocol: str) -> str:
    """The address the TLS server saw, reached through a CONNECT tunnel of
    the rotator over an upstream of ``protocol``."""
    got = curl(
        "--cacert",
        str(tls.cert),
        "-x",
        r.proxy,
        "--proxy-header",
        f"X-Proxyrefresh-Protocol: {protocol}",
        tls.url,
    )
    assert got.returncode == 0, (protocol, got.stderr)
    return str(json.loads(got.stdout)["remote_addr"])


def test_connect_tunnels_through_every_kind_of_upstream(
    rotating: Rotating, live: list[LocalProxy]
) -> None:
    bed = rotating.bed
    rotating.fill(live)
    r = rotating.start()
    tls = rot.TlsServer(bed.testbed.workdir)
    try:
        for protocol in ("http", "https", "socks4", "socks5"):
            exits = {p.exit_ip for p in live if p.url.startswith(protocol + "://")}
            for _ in range(len(exits) + 1):
                assert tls_exit(tls, r, protocol) in exits, protocol
    finally:
        tls.close()
    assert r.health()["upstream_failures"] == 0


def test_a_session_keeps_its_upstream_until_it_fails(rotating: Rotating) -> None:
    bed = rotating.bed
    upstreams = [bed.testbed.pproxy(f"127.0.0.{ip}") for ip in (31, 32, 33)]
    rotating.fill(upstreams)
    r = rotating.start()

    def exits(user: str, n: int) -> list[str]:
        got = curl("-x", f"http://{user}:x@{r.proxy[7:]}", *[bed.judge] * n, "-w", "\n")
        assert got.returncode == 0, got.stderr
        return [seen["remote_addr"] for seen in judged(got.stdout)]

    assert len(set(exits("", 6))) == 3  # no session: rotates
    first = exits("session-abc", 10)
    assert len(set(first)) == 1
    other = exits("session-xyz", 10)
    assert len(set(other)) == 1
    # The session's upstream dies: the next request moves on, invisibly,
    # and the session keeps its new upstream.
    (name,) = [n for n, _ in bed.testbed.procs if n == f"pproxy-socks5-{first[0]}"]
    (proc,) = [p for n, p in bed.testbed.procs if n == name]
    proc.terminate()
    proc.wait(timeout=10)
    after = exits("session-abc", 10)
    assert len(set(after)) == 1
    assert after[0] != first[0]


def test_a_session_holds_across_rotator_processes(rotating: Rotating) -> None:
    """Issue 35: a session's next request may reach another acceptor process
    or replica. Both follow the same upstream, and when it dies, the one
    that finds out moves the session on and the other follows it there
    (not to an upstream of its own)."""
    bed = rotating.bed
    upstreams = [bed.testbed.pproxy(f"127.0.0.{ip}") for ip in (34, 35, 36)]
    rotating.fill(upstreams)
    one, two = rotating.start(), rotating.start()

    def exits(r: rot.Rotator, n: int) -> list[str]:
        got = curl("-x", f"http://u-session-s1:x@{r.proxy[7:]}", *[bed.judge] * n, "-w", "\n")
        assert got.returncode == 0, got.stderr
        return [seen["remote_addr"] for seen in judged(got.stdout)]

    first = exits(one, 4)
    assert len(set(first)) == 1
    assert set(exits(two, 4)) == set(first)
    (proc,) = [p for n, p in bed.testbed.procs if n == f"pproxy-socks5-{first[0]}"]
    proc.terminate()
    proc.wait(timeout=10)
    moved = exits(two, 4)
    assert len(set(moved)) == 1
    assert moved[0] != first[0]
    assert set(exits(one, 4)) == set(moved)


def test_workers_share_one_port_count_together_and_come_back(rotating: Rotating) -> None:
    """Issue 35: ``--workers 2`` puts two acceptor processes on one port;
    /healthz counts the requests of both; a worker that dies is started
    again while the other goes on answering."""
    import os
    import signal

    bed = rotating.bed
    rotating.fill([bed.testbed.pproxy("127.0.0.37")])
    r = rotating.start("--workers", "2")
    host, port = r.proxy[7:].split(":")

    def one_get() -> bytes:
        request = f"GET {bed.judge} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        with socket.create_connection((host, int(port)), timeout=30) as conn:
            conn.sendall(request.encode())
            return conn.makefile("rb").readline()

    def health() -> dict[str, Any]:
        return r.health()

    def workers() -> set[int]:
        listed = Path(f"/proc/{r.proc.pid}/task/{r.proc.pid}/children").read_text().split()
        return {int(c) for c in listed if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()}

    wait_for(lambda: health()["workers"] == 2, 20, "the second worker to report")
    assert all(one_get().startswith(b"HTTP/1.1 200") for _ in range(30))
    wait_for(lambda: health()["requests"] == 30, 10, "/healthz to count all 30 requests")
    (killed,) = workers()
    os.kill(killed, signal.SIGKILL)

    def gone() -> bool:  # a zombie, or reaped: its listening socket is closed
        try:
            return Path(f"/proc/{killed}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except FileNotFoundError:
            return True

    wait_for(gone, 10, "the killed worker to be gone")
    # Connections made in the moments after a worker's death may still be
    # reset (seen in 3 runs of 8 within 10 ms of its reaping, none 0.3 s
    # later; the listener it left behind is the kernel's SO_REUSEPORT
    # business): the first process must then answer ten in a row, soon.
    answered = resets = streak = 0

    def ten_in_a_row() -> bool:
        nonlocal answered, resets, streak
        try:
            line = one_get()
        except ConnectionResetError:
            resets, streak = resets + 1, 0
            return False
        assert line.startswith(b"HTTP/1.1 200"), line
        answered, streak = answered + 1, streak + 1
        return streak >= 10

    wait_for(ten_in_a_row, 10, "the first process to answer ten in a row")
    assert resets <= 5, resets
    wait_for(lambda: workers() - {killed}, 20, "a new worker in place of the one killed")
    wait_for(lambda: health()["workers"] == 2, 20, "the new worker to report")
    # What the killed one reported is still counted (the new one may have
    # served some of the ten: its next report brings them).
    total = 30 + answered
    wait_for(
        lambda: total <= health()["requests"] <= total + resets,  # a reset one may count
        10,
        f"/healthz to count all {total} requests answered",
    )


def test_a_client_that_leaves_frees_its_upstream_at_once(rotating: Rotating) -> None:
    """A client that gives up while its upstream is silent is not waited
    for: the rotator lets the upstream go within a second, not after its
    30 s answer timeout (and blames no one: nothing is reported)."""
    bed = rotating.bed
    rotating.fill(bed.testbed.blackholes("127.0.0.38"))
    r = rotating.start()
    host, port = r.proxy[7:].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(f"GET {bed.judge} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        wait_for(lambda: r.health()["connections"] == 1, 10, "the request to be on its way")
    wait_for(lambda: r.health()["connections"] == 0, 3, "the rotator to let the client go")
    assert r.health()["upstream_failures"] == 0


def test_an_empty_pool_and_a_bad_filter_get_answers_that_say_so(rotating: Rotating) -> None:
    bed = rotating.bed
    # A pool Redis has never heard of is most often a typo: exit 4, naming
    # it, unless the rotator is told to wait for it (as the chart does).
    typo = run_cli(
        "rotate", "--pool", "nosuch", "-n", NS, env={"PROXYREFRESH_REDIS_URL": rotating.redis.url}
    )
    assert typo.returncode == 4, typo.stderr
    assert f"pool {NS}/nosuch not found in Redis" in typo.stderr
    r = rotating.start("-v")
    got = curl("-i", "-x", r.proxy, bed.judge)
    assert got.stdout.startswith("HTTP/1.1 503"), got.stdout
    assert f"no proxy in pool {NS}/{rotating.pool} is left" in got.stdout
    rotating.fill([bed.by_name("pproxy-socks5")])
    got = curl("-i", "-x", r.proxy, "--proxy-header", "X-Proxyrefresh-Protocol: socks4", bed.judge)
    assert got.stdout.startswith("HTTP/1.1 503"), got.stdout
    assert "matches protocol socks4" in got.stdout
    got = curl("-i", "-x", r.proxy, "--proxy-header", "X-Proxyrefresh-Protocol: ftp", bed.judge)
    assert got.stdout.startswith("HTTP/1.1 400"), got.stdout
    assert "bad filter" in got.stdout
    got = curl("-i", "-x", r.proxy, bed.judge)
    assert got.stdout.startswith("HTTP/1.1 200"), got.stdout
    # -v: one access-log line per request, with its upstream (no password).
    judge = bed.judge.split("//")[1].split("/")[0]
    upstream = bed.by_name("pproxy-socks5").url
    wait_for(
        lambda: f"GET {judge} 200 via {upstream}" in r.log.read_text(),
        timeout=10,
        what="the access log line of the request that went through",
    )
    assert f"GET {judge} 503 via -" in r.log.read_text()


def test_redis_going_away_is_a_503_within_seconds(rotating: Rotating) -> None:
    bed = rotating.bed
    server = RedisServer(rotating.bed.testbed)
    r = rotating.start(redis_url=server.url)
    server.stop()
    got = curl("-i", "--max-time", "10", "-x", r.proxy, bed.judge)
    assert got.stdout.startswith("HTTP/1.1 503"), (got.stdout, got.stderr)
    assert "the pool is unreachable: cannot connect" in got.stdout
    # Clients and the unauthenticated probe learn why, not where Redis is.
    where = f"{server.host}:{server.port}"
    assert where not in got.stdout
    ready = requests.get(r.api + "/readyz", timeout=10)
    assert ready.status_code == 503
    assert "cannot connect" in ready.text
    assert where not in ready.text


def test_clients_that_disconnect_cost_nothing(rotating: Rotating) -> None:
    bed = rotating.bed
    hole = bed.by_name("blackhole-127.0.0.21")
    rotating.fill([bed.by_name("pproxy-socks5"), hole])
    r = rotating.start("--connect-timeout", "1", "--answer-timeout", "1")
    host, port = r.proxy[7:].split(":")
    for i in range(60):
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            if i % 3 == 0:
                sock.sendall(b"GET http://127.0.0.2/ HTTP/1.1\r\nHo")  # a head cut short
            elif i % 3 == 1:
                sock.sendall(f"GET {bed.judge} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            else:
                sock.sendall(b"CONNECT 127.0.0.3:9 HTTP/1.1\r\n\r\n")
    wait_for(lambda: r.health()["connections"] == 0, 15, "every connection to be let go")
    got = curl("-x", r.proxy, bed.judge)
    assert json.loads(got.stdout)["remote_addr"] == "127.0.0.15"


def test_client_credentials_from_the_environment(rotating: Rotating) -> None:
    bed = rotating.bed
    rotating.fill([bed.by_name("pproxy-socks5")])
    r = rotating.start(
        PROXYREFRESH_ROTATOR_USERNAME="alice",
        PROXYREFRESH_ROTATOR_PASSWORD="s3cret",
    )
    address = r.proxy[7:]
    got = curl("-i", "-x", r.proxy, bed.judge)
    assert got.stdout.startswith("HTTP/1.1 407"), got.stdout
    assert 'Proxy-Authenticate: Basic realm="proxyrefresh"' in got.stdout
    assert curl("-i", "-x", f"http://alice:wrong@{address}", bed.judge).stdout.startswith(
        "HTTP/1.1 407"
    )
    for user in ("alice", "alice-session-s1"):
        got = curl("-x", f"http://{user}:s3cret@{address}", bed.judge, "-w", "\n")
        (seen,) = judged(got.stdout)
        assert "Proxy-Authorization" not in seen["headers"]  # consumed, never forwarded
    # A refused request's body is never read as a request of its own.
    host, port = address.rsplit(":", 1)
    smuggled = f"GET {bed.judge} HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"POST {bed.judge} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(smuggled)}\r\n\r\n"
            f"{smuggled}".encode()
        )
        answers = b""
        while chunk := sock.recv(65536):
            answers += chunk
    assert answers.count(b"HTTP/1.1 ") == 1, answers  # one 407, and the connection closed
    assert answers.startswith(b"HTTP/1.1 407")
    assert requests.get(r.api + "/v1/stats", timeout=5).status_code == 401
    stats = requests.get(r.api + "/v1/stats", auth=("alice", "s3cret"), timeout=5)
    assert stats.json()["size"] == 1


def test_the_json_api(rotating: Rotating, live: list[LocalProxy]) -> None:
    bed = rotating.bed
    rotating.fill(live)
    r = rotating.start()
    got = requests.get(r.api + "/v1/proxy", params={"protocol": "socks5"}, timeout=5)
    assert got.status_code == 200
    entry = got.json()
    assert entry["proxy"] == bed.by_name("pproxy-socks5").url
    elite = requests.get(r.api + "/v1/proxy", params={"min_anonymity": "elite"}, timeout=5)
    assert elite.json()["anonymity"] == "elite"
    bad = requests.get(r.api + "/v1/proxy", params={"protocol": "ftp"}, timeout=5)
    assert bad.status_code == 400
    assert "ftp" in bad.json()["error"]

    def post(**body: Any) -> requests.Response:
        return requests.post(r.api + "/v1/report", json=body, timeout=5)

    # A report needs the lease its proxy came with: anyone else's is refused.
    anonymous = post(proxy=entry["proxy"], ok=False)
    assert anonymous.status_code == 400
    assert "lease" in anonymous.json()["error"]
    other = requests.get(r.api + "/v1/proxy", params={"protocol": "socks4"}, timeout=5).json()
    assert post(proxy=entry["proxy"], lease=other["lease"], ok=False).status_code == 403
    report = post(proxy=entry["proxy"], lease=entry["lease"], ok=False)
    assert report.status_code == 200
    assert report.json()["failures"] == 1
    assert report.json()["score"] == pytest.approx(0.5)
    assert post(proxy=entry["proxy"], lease=entry["lease"], ok=False).status_code == 409
    # However often it is handed out, one client's failures count once a proxy.
    for _ in range(3):
        again = requests.get(r.api + "/v1/proxy", params={"protocol": "socks5"}, timeout=5)
        repeat = post(proxy=entry["proxy"], lease=again.json()["lease"], ok=False)
        assert repeat.status_code == 429
        assert "once counts" in repeat.json()["error"]
    assert [e.failures for e in rot.entries(rotating.redis.url, NS, rotating.pool)
            if e.proxy == entry["proxy"]] == [1]  # fmt: skip
    missing = post(proxy="http://127.0.0.9:1", lease=entry["lease"], ok=True)
    assert missing.status_code == 403
    assert requests.post(r.api + "/v1/report", data="{", timeout=5).status_code == 400
    stats = requests.get(r.api + "/v1/stats", timeout=5).json()
    assert stats["size"] == len(live)
    assert stats["usable"] == len(live) - 1  # the one reported failing
    assert requests.get(r.api + "/readyz", timeout=5).json() == {"status": "ready"}
    # Prometheus metrics on the same port (issue 32, item 6).
    scraped = requests.get(r.api + "/metrics", timeout=5)
    assert scraped.status_code == 200
    where = f'namespace="{NS}",pool="{rotating.pool}"'
    assert f"proxyrefresh_rotator_requests_total{{{where}}}" in scraped.text
    assert f"proxyrefresh_rotator_connections{{{where}}}" in scraped.text


def test_the_rotator_needs_a_redis_user_for_its_pool_only(
    rotating: Rotating, live: list[LocalProxy]
) -> None:
    bed = rotating.bed
    rotating.fill(live)
    rotating.fill(live, pool=rotating.pool + "-other")
    user = f"rotator-{rotating.pool}"
    granted = run_cli(
        "pool",
        "grant",
        rotating.pool,
        "-n",
        NS,
        "--user",
        user,
        env={"PROXYREFRESH_REDIS_URL": rotating.redis.url},
    )
    assert granted.returncode == 0, granted.stderr
    url = granted.stdout.strip()
    assert url.startswith(f"redis://{user}:")
    r = rotating.start(redis_url=url)
    got = curl("-x", r.proxy, bed.judge, "-w", "\n")
    assert got.returncode == 0, got.stderr
    assert judged(got.stdout)[0]["remote_addr"] in {p.exit_ip for p in live}
    first = requests.get(r.api + "/v1/proxy", timeout=5).json()
    report = requests.post(
        r.api + "/v1/report",
        json={"proxy": first["proxy"], "lease": first["lease"], "ok": True},
        timeout=5,
    )
    assert report.status_code == 200, report.text
    assert requests.get(r.api + "/v1/stats", timeout=5).json()["size"] == len(live)
    # The same credential opens no other pool.
    other = run_cli(
        "pool", "stats", rotating.pool + "-other", "-n", NS, env={"PROXYREFRESH_REDIS_URL": url}
    )
    assert other.returncode == 69, (other.stdout, other.stderr)
    assert "NOPERM" in other.stderr or "permission" in other.stderr.lower()


def test_upstreams_that_want_credentials_get_them(rotating: Rotating) -> None:
    bed = rotating.bed

    def with_auth(proxy: LocalProxy, user: str, password: str) -> LocalProxy:
        scheme, _, rest = proxy.url.partition("://")
        return LocalProxy(
            proxy.name, f"{scheme}://{user}:{password}@{rest}", proxy.expect, proxy.exit_ip
        )

    http = bed.testbed.tinyproxy("127.0.0.35", Anonymity.ELITE, auth=("alice", "pass1"))
    socks = bed.testbed.microsocks("127.0.0.36", auth=("bob", "s3cr@t"))
    upstreams = [
        with_auth(http, "alice", "pass1"),
        with_auth(socks, "bob", "s3cr%40t"),  # a URL-encoded password
    ]
    rotating.fill(upstreams)
    r = rotating.start()
    got = curl("-x", r.proxy, *[bed.judge] * 4, "-w", "\n")
    assert got.returncode == 0, got.stderr
    assert sorted(seen["remote_addr"] for seen in judged(got.stdout)) == [
        "127.0.0.35",
        "127.0.0.35",
        "127.0.0.36",
        "127.0.0.36",
    ]
    tls = rot.TlsServer(bed.testbed.workdir)
    try:
        for protocol, exit_ip in (("http", "127.0.0.35"), ("socks5", "127.0.0.36")):
            assert tls_exit(tls, r, protocol) == exit_ip
    finally:
        tls.close()
    assert r.health()["upstream_failures"] == 0


class BadTarget(socketserver.BaseRequestHandler):
    """A site that takes the request and then closes, resets, or hangs."""

    mode = "close"
    held: list[socket.socket] = []

    def handle(self) -> None:
        self.request.settimeout(5)
        with __import__("contextlib").suppress(OSError):
            self.request.recv(65536)
        if self.mode == "reset":  # SO_LINGER 0: the close sends RST
            self.request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif self.mode == "hang":
            BadTarget.held.append(self.request)
            threading.Event().wait(10)


def bad_target(mode: str) -> tuple[socketserver.ThreadingTCPServer, str]:
    handler = type(f"BadTarget{mode}", (BadTarget,), {"mode": mode})
    server = socketserver.ThreadingTCPServer(("127.0.0.5", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.5:{server.server_address[1]}/"


def test_a_target_that_fails_everyone_costs_no_upstream_its_place(
    rotating: Rotating, live: list[LocalProxy]
) -> None:
    """Sites that refuse, reset, close without answering or hang, asked
    through every kind of upstream: the rotator answers 502 (or the
    upstream's own error), saying the target did it, and every upstream
    stays as usable as it was: a bad site must not empty the pool."""
    rotating.fill(live)
    r = rotating.start("--answer-timeout", "2", "--connect-timeout", "2")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.5", 0))
        refused_url = f"http://127.0.0.5:{probe.getsockname()[1]}/"
    servers = [bad_target(mode) for mode in ("close", "reset", "hang")]
    try:
        for url in [refused_url, *(u for _, u in servers)]:
            for protocol in ("http", "socks4", "socks5"):
                asked = f"X-Proxyrefresh-Protocol: {protocol}"
                got = curl("-x", r.proxy, "--proxy-header", asked, "-w", "%{http_code}", url)
                assert got.stdout[-3:] in ("500", "502", "503", "504"), (url, protocol, got)
        stats = requests.get(r.api + "/v1/stats", timeout=5).json()
        blamed = [e.proxy for e in rot.entries(rotating.redis.url, NS, rotating.pool) if e.failures]
        assert blamed == []
        assert stats["usable"] == len(live), stats
        assert r.health()["upstream_failures"] == 0
        # The rotator itself, asked where every upstream went silent, names the target.
        silent = curl("-x", r.proxy, "--proxy-header", "X-Proxyrefresh-Protocol: socks5",
                      servers[0][1])  # fmt: skip
        assert "the target did not answer" in silent.stdout, silent
    finally:
        for server, _ in servers:
            server.shutdown()
            server.server_close()
        for held in BadTarget.held:
            held.close()


def test_256_clients_for_a_minute_get_only_answers_from_the_target(
    rotating: Rotating, live: list[LocalProxy]
) -> None:
    """Issue 35: 256 clients for 60 s through a rotator allowed 4 Redis
    connections get only 2xx: its commands wait their turn for a connection
    (a pool that raised instead answered 503 "Too many connections"). Each
    client keeps its connection and asks twice a second, as a crawler's
    workers do; the first requests come all at once."""
    import asyncio
    import time

    import aiohttp

    rotating.fill([p for p in live if p.url.startswith("http://")])
    r = rotating.start(PROXYREFRESH_REDIS_MAX_CONNECTIONS="4")
    judge = rotating.bed.judge

    async def a_minute() -> list[int]:
        deadline = time.monotonic() + 60
        limits = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=limits) as session:

            async def client() -> list[int]:
                statuses = []
                while time.monotonic() < deadline:
                    async with session.get(judge, proxy=r.proxy) as answer:
                        await answer.read()
                        statuses.append(answer.status)
                    await asyncio.sleep(0.5)  # the client's own pace, not a wait on the rotator
                return statuses

            done = await asyncio.gather(*(client() for _ in range(256)))
        return [s for statuses in done for s in statuses]

    statuses = Counter(asyncio.run(a_minute()))
    assert set(statuses) == {200}, statuses
    assert statuses[200] > 256 * 60  # about two a second each, all answered
