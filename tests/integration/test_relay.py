"""The rotator's protocol relay (worker/relay.py) against a scripted http
upstream: every framing an answer comes in, pipelining, a connection that
turns to the stream path halfway, kept upstream connections that close,
and a client that cannot read as fast as the upstream sends."""

from __future__ import annotations

import http.client
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from proxyrefresh.models import Anonymity
from tests.conftest import wait_for
from tests.harness.rotator import Rotating
from tests.harness.testbed import LocalProxy, free_port

pytestmark = pytest.mark.integration
TARGET = "http://origin.invalid"  # never resolved: the scripted upstream answers itself
BIG = 8 * 1024 * 1024


def chunked_answer() -> list[bytes]:
    """A chunked answer with an extension and a trailer, in pieces that cut
    its size lines, its data and its last chunk apart."""
    whole = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    whole += b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n"
    return [whole[i : i + 7] for i in range(0, len(whole), 7)]


@dataclass
class Scripted:
    """An http upstream that answers absolute-URI requests itself, by path,
    and notes each request head and connection it got."""

    port: int
    heads: list[bytes] = field(default_factory=list)
    connections: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def proxy(self) -> LocalProxy:
        return LocalProxy("scripted", f"http://127.0.0.1:{self.port}", Anonymity.ELITE)

    def answer(self, head: bytes, served: int, send: Callable[[bytes], None]) -> bool:
        """Answer one request; whether the connection stays open."""
        method, path = head.split(b" ")[0], head.split(b" ")[1].removeprefix(TARGET.encode())
        said = method + b" " + path
        if path == b"/then-close" and served > 0:
            return False  # as an upstream whose idle timeout fell just as the request came
        if path == b"/bad-length":
            send(b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\nxx")
            return False
        # A superscript two (latin-1 0xb2): a digit to str.isdigit, no number to int.
        if path == b"/superscript-length":
            send(b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\nxx")
            return False
        if path == b"/superscript-status":
            send(b"HTTP/1.1 \xb200 OK\r\nContent-Length: 2\r\n\r\nxx")
            return False
        if path == b"/silent":
            time.sleep(3)  # past the answer timeout of the test that asks it
            return False
        if path == b"/chunked":
            for piece in chunked_answer():
                send(piece)
                time.sleep(0.005)
            return True
        if path == b"/close":
            send(b"HTTP/1.1 200 OK\r\n\r\n" + said + b" until the close")
            return False
        if path == b"/interim":
            send(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
            send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            return True
        if path == b"/big":
            send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BIG)
            send(b"x" * BIG)
            return True
        body = b"" if method == b"HEAD" else said
        send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(said), body))
        return True


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    port = free_port("127.0.0.1")
    state = Scripted(port)

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            with state.lock:
                state.connections += 1
            data, served = b"", 0
            while True:
                while b"\r\n\r\n" not in data:
                    more = self.request.recv(65536)
                    if not more:
                        return
                    data += more
                head, _, data = data.partition(b"\r\n\r\n")
                with state.lock:
                    state.heads.append(head)
                length = [int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
                          if line.startswith(b"content-length:")]  # fmt: skip
                while len(data) < sum(length):  # a body is read, and not answered
                    data += self.request.recv(65536)
                data = data[sum(length) :]
                if not state.answer(head, served, self.request.sendall):
                    return
                served += 1

    server = socketserver.ThreadingTCPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def relay(rotating: Rotating, scripted: Scripted) -> tuple[str, int]:
    rotating.fill([scripted.proxy])
    host, port = rotating.start().proxy[7:].split(":")
    return host, int(port)


def get(conn: http.client.HTTPConnection, path: str, method: str = "GET") -> tuple[int, bytes]:
    conn.request(method, TARGET + path, body=b"abc" if method == "POST" else None)
    response = conn.getresponse()
    return response.status, response.read()


def test_every_framing_comes_whole_over_one_kept_connection(
    rotating: Rotating, scripted: Scripted, relay: tuple[str, int]
) -> None:
    """Length, chunks (cut anywhere, trailer and all), an interim answer
    and HEAD, one after another on one client connection, and the upstream
    connection kept for all of them; nothing of the rotator's reaches it."""
    conn = http.client.HTTPConnection(*relay, timeout=10)
    assert get(conn, "/length") == (200, b"GET /length")
    assert get(conn, "/chunked") == (200, b"hello world")
    assert get(conn, "/interim") == (200, b"ok")
    assert get(conn, "/length", "HEAD") == (200, b"")
    assert get(conn, "/length") == (200, b"GET /length")
    conn.close()
    assert scripted.connections == 1
    for head in scripted.heads:
        text = head.decode().lower()
        assert text.startswith(("get http://origin.invalid/", "head http://origin.invalid/"))
        for added in ("via:", "x-forwarded", "proxy-connection", "x-proxyrefresh"):
            assert added not in text


def test_an_answer_to_the_close_closes_the_client_connection(
    scripted: Scripted, relay: tuple[str, int]
) -> None:
    with socket.create_connection(relay, timeout=10) as sock:
        sock.sendall(f"GET {TARGET}/close HTTP/1.1\r\nHost: origin.invalid\r\n\r\n".encode())
        received = b""
        while more := sock.recv(65536):  # the rotator closes once the upstream did
            received += more
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nConnection: close\r\n" in received
    assert received.endswith(b"GET /close until the close")


def test_pipelined_requests_are_answered_in_order(relay: tuple[str, int]) -> None:
    requests = "".join(
        f"GET {TARGET}/{name} HTTP/1.1\r\nHost: origin.invalid\r\n\r\n"
        for name in ("one", "chunked", "three")
    )
    with socket.create_connection(relay, timeout=10) as sock:
        sock.sendall(requests.encode())
        received = b""
        deadline = time.monotonic() + 10
        while not received.endswith(b"GET /three") and time.monotonic() < deadline:
            received += sock.recv(65536)
    bodies = [b"GET /one", b"hello\r\n6\r\n world", b"GET /three"]
    at = [received.find(body) for body in bodies]
    assert -1 not in at, received
    assert at == sorted(at), received


def test_a_request_with_a_body_turns_the_connection_to_the_stream_path(
    rotating: Rotating, relay: tuple[str, int]
) -> None:
    """A POST halfway through a kept connection is served (by the stream
    path, with its body), and so is every request after it."""
    conn = http.client.HTTPConnection(*relay, timeout=10)
    assert get(conn, "/first") == (200, b"GET /first")
    assert get(conn, "/posted", "POST") == (200, b"POST /posted")
    assert get(conn, "/after") == (200, b"GET /after")
    conn.close()
    wait_for(lambda: rotating.started[0].health()["connections"] == 0, 10, "the client to go")
    assert rotating.started[0].health()["requests"] == 3


def test_a_kept_upstream_connection_that_closes_is_replaced_unseen(
    rotating: Rotating, scripted: Scripted, relay: tuple[str, int]
) -> None:
    """The upstream closes a kept connection just as a request comes: the
    request goes again on a fresh connection, and the upstream is not
    blamed (an idle timeout is no failure)."""
    conn = http.client.HTTPConnection(*relay, timeout=10)
    assert get(conn, "/then-close") == (200, b"GET /then-close")
    assert get(conn, "/then-close") == (200, b"GET /then-close")
    conn.close()
    assert scripted.connections == 2
    health = rotating.started[0].health()
    assert health["upstream_failures"] == 0
    assert health["by_status"] == {"200": 2}


def test_a_slow_reader_gets_a_large_answer_whole(
    rotating: Rotating, relay: tuple[str, int]
) -> None:
    """An 8 MiB answer to a client that reads slowly arrives whole: the
    relay stops reading from the upstream while the client's buffer is
    full, instead of holding the answer in memory."""
    with socket.create_connection(relay, timeout=30) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.sendall(f"GET {TARGET}/big HTTP/1.1\r\nHost: origin.invalid\r\n\r\n".encode())
        received = 0
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)
        time.sleep(0.5)  # the upstream fills every buffer on the way meanwhile
        while received < BIG:
            chunk = sock.recv(65536)
            assert chunk, f"closed after {received} bytes"
            received += len(chunk)
    assert received == BIG
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")


def test_the_idle_and_answer_timeouts_hold_across_requests(
    rotating: Rotating, scripted: Scripted
) -> None:
    """A client that keeps asking keeps its connection past the idle
    timeout; one that stops is let go after it. An upstream that does not
    answer in time is left (the client gets a 502 saying so), after a run
    of requests it answered in time on the same connection."""
    rotating.fill([scripted.proxy])
    timeouts = {f"PROXYREFRESH_ROTATOR_{name}": "1" for name in ("IDLE_TIMEOUT", "ANSWER_TIMEOUT")}
    r = rotating.start(**timeouts, PROXYREFRESH_ROTATOR_RETRIES="0")
    host, port = r.proxy[7:].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    started = time.monotonic()
    while time.monotonic() - started < 2.5:  # past the idle timeout, asking all along
        assert get(conn, "/length") == (200, b"GET /length")
        time.sleep(0.3)
    status, body = get(conn, "/silent")
    assert status == 502
    assert b"no answer in time" in body
    with socket.create_connection((host, int(port)), timeout=10) as idle:
        left = time.monotonic()
        assert idle.recv(1) == b""  # closed by the rotator, not by our timeout
        assert 0.8 < time.monotonic() - left < 5


def test_a_client_that_leaves_mid_answer_takes_its_upstream_connection_with_it(
    rotating: Rotating, scripted: Scripted, relay: tuple[str, int]
) -> None:
    """The rest of an answer nobody reads cannot be the start of the next
    one: the upstream connection is closed, not kept, and the next client
    is served on a fresh one."""
    with socket.create_connection(relay, timeout=10) as sock:
        sock.sendall(f"GET {TARGET}/big HTTP/1.1\r\nHost: origin.invalid\r\n\r\n".encode())
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n")
    r = rotating.started[0]
    wait_for(lambda: r.health()["connections"] == 0, 10, "the rotator to let the client go")
    assert r.health()["upstream_connections_idle"] == 0
    conn = http.client.HTTPConnection(*relay, timeout=10)
    assert get(conn, "/after") == (200, b"GET /after")
    conn.close()
    assert scripted.connections == 2
    assert r.health()["upstream_failures"] == 0


def test_an_answer_that_does_not_say_where_it_ends_is_the_upstream_s_failure(
    rotating: Rotating, relay: tuple[str, int]
) -> None:
    """A Content-Length or a status code that is no number is no answer to
    pass on: the upstream failed (it is reported, and another would be
    tried), and the client gets a 502 saying why, at once, on either path (a
    POST takes the stream path). A superscript digit is no number either,
    though str.isdigit says it is a digit. (A good answer after each keeps
    the upstream from failing three times in a row, which drops it.)"""
    cases = {
        "/bad-length": b"bad Content-Length 'nope'",
        "/superscript-length": b"bad Content-Length '\xc2\xb2'",
        "/superscript-status": b"bad status code '\xc2\xb200'",
    }
    for path, why in cases.items():
        for method in ("GET", "POST"):
            conn = http.client.HTTPConnection(*relay, timeout=10)
            status, body = get(conn, path, method)
            assert status == 502, (path, method, body)
            assert why in body, (path, method, body)
            assert get(conn, "/fine")[0] == 200
            conn.close()
    assert rotating.started[0].health()["upstream_failures"] == 2 * len(cases)
