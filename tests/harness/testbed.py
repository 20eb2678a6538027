"""Start real proxies of every anonymity level, dead ends and a judge.

Each proxy listens on, and leaves from, its own 127.0.0.x address, so what
the judge sees as the exit IP tells the proxies apart and differs from the
checker's own address (127.0.0.1).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxyrefresh.models import Anonymity
from tests.harness.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
INSTALL_HINT = "run `make bootstrap` (or apt-get install {pkg})"


class MissingTool(RuntimeError):
    """A server the testbed needs is not installed."""


def which(name: str, package: str | None = None) -> str:
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise MissingTool(f"{name} is not installed: " + INSTALL_HINT.format(pkg=package or name))


# pproxy, hidden from uvloop (tests/harness/run_pproxy.py says why).
PPROXY = [sys.executable, "-m", "tests.harness.run_pproxy"]


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def start_logged(
    args: list[str], log: Path, *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start a process in a session of its own, its output appended to ``log``
    (the child keeps the file open; ours is closed at once)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as handle:
        return subprocess.Popen(
            args,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )


def healthy(port: int) -> bool:
    """A server's /healthz on 127.0.0.1:``port`` answers 200 (the operator's
    liveness, kubelet's): a port that merely accepts could be somebody else's."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def wait_for_port(
    host: str,
    port: int,
    timeout: float = 20.0,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    """Block until something accepts on host:port, or fail saying why."""

    def accepts() -> bool:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            return False

    def gone() -> str | None:
        if proc is None or proc.poll() is None:
            return None
        command = " ".join(map(str, proc.args[:4])) if isinstance(proc.args, list) else ""
        return f"{command} ... exited with {proc.returncode}"

    wait_until(accepts, timeout, f"{host}:{port} to accept", gone=gone, log=log)


@dataclass(frozen=True)
class LocalProxy:
    """A proxy the testbed runs, and what a correct checker must say of it."""

    name: str
    url: str
    expect: Anonymity | None  # None: must be found dead
    exit_ip: str | None = None


class Testbed:
    """Owns every process it starts; ``close()`` (or the context) stops them."""

    def __init__(self, workdir: Path | None = None) -> None:
        # squid and tinyproxy, started as root, drop to an unprivileged user
        # that must reach their files: a private temp dir (pytest's are 0700
        # all the way up) would stop them, so the state lives under /tmp.
        self.owned = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="proxyrefresh-testbed-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o755)
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.users: list[str] = []  # system users made for dante, removed on close

    def __enter__(self) -> Testbed:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def spawn(
        self, name: str, args: list[str], cwd: Path | None = None
    ) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.workdir / f"{name}.log"
        proc = start_logged(args, log, cwd=cwd or ROOT)  # ROOT: `-m tests.harness...` imports
        self.procs.append((name, proc))
        return proc, log

    def close(self) -> None:
        for _, proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for _, proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
        for user in self.users:
            subprocess.run(["userdel", user], capture_output=True, check=False)
        self.users.clear()
        if self.owned and not os.environ.get("PROXYREFRESH_KEEP_TESTBED"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    # --- the judge -------------------------------------------------------

    def judge(self, host: str = "127.0.0.2", port: int | None = None) -> str:
        port = port or free_port(host)
        proc, log = self.spawn(
            f"judge-{host}",
            [sys.executable, "-m", "proxyrefresh.front.cli", "judge", "--listen", f"{host}:{port}"],
        )
        wait_for_port(host, port, proc=proc, log=log)
        return f"http://{host}:{port}/"

    # --- real proxies ----------------------------------------------------

    def tinyproxy(
        self, ip: str, level: Anonymity, auth: tuple[str, str] | None = None
    ) -> LocalProxy:
        """tinyproxy set up to be transparent (X-Tinyproxy carries the
        client's address), anonymous (Via) or elite (no Via); with ``auth``,
        it wants those Basic credentials (the URL returned carries none)."""
        binary = which("tinyproxy")
        port = free_port(ip)
        name = f"tinyproxy-{level}-{ip}" + ("-auth" if auth else "")
        lines = [
            f"Port {port}",
            f"Listen {ip}",
            f"Bind {ip}",
            "Timeout 30",
            "MaxClients 512",
            f'LogFile "{self.workdir / (name + ".access.log")}"',
            "LogLevel Warning",
        ]
        if os.geteuid() == 0:
            lines += ["User nobody", "Group nogroup"]
        if level is Anonymity.TRANSPARENT:
            lines.append("XTinyproxy Yes")
        if level is Anonymity.ELITE:
            lines.append("DisableViaHeader Yes")
        if auth:
            lines.append(f"BasicAuth {auth[0]} {auth[1]}")
        conf = self.workdir / f"{name}.conf"
        conf.write_text("\n".join(lines) + "\n")
        (self.workdir / f"{name}.access.log").touch()
        os.chmod(self.workdir / f"{name}.access.log", 0o666)
        proc, log = self.spawn(name, [binary, "-d", "-c", str(conf)])
        wait_for_port(ip, port, proc=proc, log=log)
        return LocalProxy(name, f"http://{ip}:{port}", level, ip)

    def tinyproxy_connect(self, ip: str) -> LocalProxy:
        """The same elite tinyproxy, checked as a CONNECT (https) proxy."""
        plain = self.tinyproxy(ip, Anonymity.ELITE)
        return LocalProxy(
            plain.name + "-connect",
            plain.url.replace("http://", "https://", 1),
            Anonymity.ELITE,
            ip,
        )

    def microsocks(self, ip: str, auth: tuple[str, str] | None = None) -> LocalProxy:
        """microsocks (SOCKS5), with ``-u/-P`` when ``auth`` is given (the URL
        returned carries no credentials)."""
        binary = which("microsocks")
        port = free_port(ip)
        name = f"microsocks-{ip}" + ("-auth" if auth else "")
        args = [binary, "-i", ip, "-p", str(port), "-b", ip]  # leaves from its own address
        if auth:
            args += ["-u", auth[0], "-P", auth[1]]
        proc, log = self.spawn(name, args)
        wait_for_port(ip, port, proc=proc, log=log)
        return LocalProxy(name, f"socks5://{ip}:{port}", Anonymity.ELITE, ip)

    def dante(self, users: dict[str, str]) -> LocalProxy:
        """dante-server (SOCKS5) asking for a user name and password. Its
        username method checks system users, so they are made here (root
        only) and removed on close. dante binds only to an interface's own
        address: 127.0.0.1. The URL returned carries no credentials."""
        binary = which("danted", "dante-server")
        if os.geteuid() != 0:
            raise MissingTool("dante-server checks system users: the test must run as root")
        for user, password in users.items():
            if subprocess.run(["id", user], capture_output=True, check=False).returncode:
                subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", user], check=True)
                self.users.append(user)
            subprocess.run(["chpasswd"], input=f"{user}:{password}\n", text=True, check=True)
        port = free_port("127.0.0.1")
        name = f"dante-{port}"
        conf = self.workdir / f"{name}.conf"
        conf.write_text(
            "\n".join(
                [
                    f"logoutput: {self.workdir / (name + '.log')}",
                    f"internal: 127.0.0.1 port = {port}",
                    "external: lo",
                    "socksmethod: username",
                    "user.privileged: root",
                    "user.unprivileged: nobody",
                    "client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }",
                    "socks pass { from: 127.0.0.0/8 to: 0.0.0.0/0 command: connect }",
                ]
            )
            + "\n"
        )
        proc, log = self.spawn(name, [binary, "-f", str(conf), "-p", str(conf) + ".pid"])
        wait_for_port("127.0.0.1", port, proc=proc, log=log)
        return LocalProxy(name, f"socks5://127.0.0.1:{port}", Anonymity.TRANSPARENT, "127.0.0.1")

    def squid(self, ip: str) -> LocalProxy:
        """squid with ``forwarded_for on``: X-Forwarded-For names the client."""
        binary = which("squid")
        port = free_port(ip)
        name = f"squid-{ip}"
        state = self.workdir / name
        state.mkdir(exist_ok=True)
        user = "proxy" if os.geteuid() == 0 else None
        if user:
            shutil.chown(state, user)
        conf = state / "squid.conf"
        conf.write_text(
            "\n".join(
                [
                    f"http_port {ip}:{port}",
                    f"tcp_outgoing_address {ip}",
                    "http_access allow all",
                    "forwarded_for on",
                    "via on",
                    "cache deny all",
                    "cache_mem 8 MB",
                    f"access_log stdio:{state}/access.log",
                    f"cache_log {state}/cache.log",
                    f"pid_filename {state}/squid.pid",
                    f"coredump_dir {state}",
                    "shutdown_lifetime 0 seconds",
                    "dns_nameservers 127.0.0.1",
                    "max_filedescriptors 4096",
                    *([f"cache_effective_user {user}"] if user else []),
                ]
            )
            + "\n"
        )
        proc, log = self.spawn(name, [binary, "-N", "-f", str(conf)], cwd=state)
        wait_for_port(ip, port, timeout=40, proc=proc, log=log)
        return LocalProxy(name, f"http://{ip}:{port}", Anonymity.TRANSPARENT, ip)

    def pproxy(self, ip: str, scheme: str = "socks5") -> LocalProxy:
        """pproxy as a SOCKS (or HTTP) server leaving from the address it
        was reached on (``@in``)."""
        port = free_port(ip)
        name = f"pproxy-{scheme}-{ip}"
        proc, log = self.spawn(name, [*PPROXY, "-l", f"{scheme}://{ip}:{port}/@in"])
        wait_for_port(ip, port, proc=proc, log=log)
        return LocalProxy(name, f"{scheme}://{ip}:{port}", Anonymity.ELITE, ip)

    # --- dead ends -------------------------------------------------------

    def refused(self, ip: str, count: int = 1) -> list[LocalProxy]:
        """Ports nothing listens on: the kernel refuses at once."""
        ports: set[int] = set()
        while len(ports) < count:
            ports.add(free_port(ip))
        return [LocalProxy(f"refused-{ip}-{port}", f"http://{ip}:{port}", None) for port in ports]

    def _deadends(self, mode: str, ip: str, count: int, delay: float = 0.0) -> list[int]:
        """Start the dead-end listeners; they print their ports when ready."""
        name = f"{mode}-{ip}-{len(self.procs)}"
        log = self.workdir / f"{name}.log"
        with log.open("ab") as handle:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.harness.deadends", mode, ip, str(count), str(delay)],
                stdout=subprocess.PIPE,
                stderr=handle,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=ROOT,  # where `tests.harness` is importable from
            )
        self.procs.append((name, proc))
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            proc.wait(timeout=10)
            raise RuntimeError(f"{mode} listeners on {ip} failed: {log.read_text()[-2000:]}")
        return [int(port) for port in json.loads(line)]

    def blackholes(self, ip: str, count: int = 1) -> list[LocalProxy]:
        """Listeners that accept and never answer: each costs a full timeout."""
        return [
            LocalProxy(f"blackhole-{ip}-{port}", f"http://{ip}:{port}", None)
            for port in self._deadends("blackhole", ip, count)
        ]

    def slow(self, ip: str, delay: float) -> LocalProxy:
        """A working, elite HTTP proxy that answers ``delay`` seconds late."""
        (port,) = self._deadends("slow", ip, 1, delay)
        return LocalProxy(f"slow-{delay:g}-{ip}-{port}", f"http://{ip}:{port}", Anonymity.ELITE, ip)

    def forger(self, ip: str) -> LocalProxy:
        """Answers every request with a fake judge page."""
        (port,) = self._deadends("forger", ip, 1)
        return LocalProxy(f"forger-{ip}", f"http://{ip}:{port}", None)


def standard_set(bed: Testbed) -> list[LocalProxy]:
    """One proxy of every kind the acceptance tests and the demo name."""
    return [
        bed.tinyproxy("127.0.0.11", Anonymity.TRANSPARENT),
        bed.tinyproxy("127.0.0.12", Anonymity.ANONYMOUS),
        bed.tinyproxy("127.0.0.13", Anonymity.ELITE),
        bed.squid("127.0.0.14"),
        bed.pproxy("127.0.0.15", "socks5"),
        bed.pproxy("127.0.0.16", "socks4"),
        bed.tinyproxy_connect("127.0.0.17"),
        *bed.refused("127.0.0.20"),
        *bed.blackholes("127.0.0.21"),
        bed.forger("127.0.0.22"),
    ]


@dataclass(frozen=True)
class TlsFiles:
    """A throwaway CA and a server certificate it signed, for 127.0.0.1."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def make(cls, into: Path) -> TlsFiles:
        """Made with the openssl command line, per run: nothing is kept."""
        into.mkdir(parents=True, exist_ok=True)
        openssl = which("openssl")

        def run(*args: str) -> None:
            subprocess.run([openssl, *args], check=True, capture_output=True)

        ca, ca_key = into / "ca.pem", into / "ca.key"
        cert, key, csr = into / "server.pem", into / "server.key", into / "server.csr"
        san = into / "san.cnf"
        san.write_text("subjectAltName=IP:127.0.0.1\n")
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=test CA", "-keyout", str(ca_key), "-out", str(ca))  # fmt: skip
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", str(key), "-out", str(csr))  # fmt: skip
        run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
            "-CAcreateserial", "-days", "1", "-extfile", str(san), "-out", str(cert))  # fmt: skip
        return cls(ca, cert, key)


class RedisServer:
    """A real redis-server on loopback that a test may stop and restart,
    with its data (appendonly) or empty; with ``tls``, on TLS only."""

    def __init__(
        self,
        bed: Testbed,
        host: str = "127.0.0.1",
        appendonly: bool = False,
        tls: TlsFiles | None = None,
        extra: tuple[str, ...] = (),
        port: int | None = None,
    ) -> None:
        self.binary = which("redis-server")
        self.extra = extra  # more of redis-server's options (a replica's --replicaof)
        self.bed = bed
        self.host = host
        self.port = port or free_port(host)
        self.appendonly = appendonly
        self.tls = tls
        self.dir = Path(tempfile.mkdtemp(prefix="redis-", dir=bed.workdir))
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{self.host}:{self.port}/0"

    def start(self) -> None:
        args = [
            self.binary,
            "--bind",
            self.host,
            "--port",
            str(self.port),
            "--dir",
            str(self.dir),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "always",
        ]
        if self.tls is not None:  # the TLS port only; clients need no certificate
            tls = self.tls
            args[4] = "0"
            args += ["--tls-port", str(self.port), "--tls-auth-clients", "no",
                     "--tls-cert-file", str(tls.cert), "--tls-key-file", str(tls.key),
                     "--tls-ca-cert-file", str(tls.ca)]  # fmt: skip
        args += self.extra
        self.proc, log = self.bed.spawn(f"redis-{self.port}", args)
        wait_for_port(self.host, self.port, proc=self.proc, log=log)

    def stop(self, wipe: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
        if wipe:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir.mkdir()

    def restart(self, wipe: bool = False) -> None:
        self.stop(wipe=wipe)
        self.start()


def one_server(host: str, port: int, tls: TlsFiles | None) -> Any:
    """A blocking client of the one Redis server (or sentinel) at ``port``,
    on TLS with the harness's CA where ``tls`` is given."""
    import redis

    if tls is None:
        return redis.Redis(host, port, decode_responses=True)
    return redis.Redis(host, port, decode_responses=True, ssl=True, ssl_ca_certs=str(tls.ca))


class Sentinels:
    """A primary, its replica and three sentinels watching it, on loopback:
    the Redis a Sentinel-managed install gives (a failover within seconds of
    the primary's death: down after 1 s, a quorum of 2)."""

    SERVICE = "proxyrefresh"

    def __init__(self, bed: Testbed, host: str = "127.0.0.1", tls: TlsFiles | None = None) -> None:
        self.bed, self.host, self.tls = bed, host, tls
        # The replica's first sync at once (Redis waits 5 s for more replicas
        # by default), so a primary killed early has a replica that holds its data.
        options: tuple[str, ...] = ("--repl-diskless-sync-delay", "0")
        options += ("--tls-replication", "yes") if tls is not None else ()
        self.primary = RedisServer(bed, host, appendonly=True, tls=tls, extra=options)
        self.replica = RedisServer(
            bed, host, appendonly=True, tls=tls,
            extra=(*options, "--replicaof", host, str(self.primary.port)),
        )  # fmt: skip
        self.ports = [free_port(host) for _ in range(3)]
        for port in self.ports:
            conf = Path(tempfile.mkdtemp(prefix="sentinel-", dir=bed.workdir)) / "sentinel.conf"
            listen = f"port {port}\n"
            if tls is not None:  # the sentinels on TLS only, and to the servers on TLS
                listen = (f"port 0\ntls-port {port}\ntls-cert-file {tls.cert}\n"
                          f"tls-key-file {tls.key}\ntls-ca-cert-file {tls.ca}\n"
                          "tls-auth-clients no\ntls-replication yes\n")  # fmt: skip
            conf.write_text(
                f"{listen}bind {host}\n"
                f"sentinel monitor {self.SERVICE} {host} {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {self.SERVICE} 1000\n"
                f"sentinel failover-timeout {self.SERVICE} 5000\n"
                f"sentinel parallel-syncs {self.SERVICE} 1\n"
            )
            proc, log = bed.spawn(
                f"sentinel-{port}", [which("redis-server"), str(conf), "--sentinel"]
            )
            wait_for_port(host, port, proc=proc, log=log)
        wait_until(lambda: replica_synced(self.node(self.replica.port)), 30,
                   "the replica in sync with its primary", interval=0.1)  # fmt: skip

    def node(self, port: int) -> Any:
        """A client of one server alone (on TLS where the set is)."""
        return one_server(self.host, port, self.tls)

    @property
    def url(self) -> str:
        nodes = ",".join(f"{self.host}:{port}" for port in self.ports)
        scheme = "rediss+sentinel" if self.tls is not None else "redis+sentinel"
        return f"{scheme}://{nodes}/{self.SERVICE}/0"

    def primary_port(self) -> int:
        """Where the sentinels say the primary is now."""
        with self.node(self.ports[0]) as sentinel:
            _, port = sentinel.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.SERVICE)
            return int(port)


def bus_port(host: str) -> int:
    """A free port for a cluster node: below the ephemeral range (a node's
    bus listens 10,000 higher, and Redis refuses a port above 55535), its
    bus port free too."""
    import random

    for _ in range(200):
        port = random.randint(20_000, 29_999)
        try:
            for taken in (port, port + 10_000):
                with socket.socket() as probe:
                    probe.bind((host, taken))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no free port pair for a cluster node on {host}")


def replica_synced(node: Any) -> bool:
    """A primary, or a replica whose link to its primary is up."""
    with node:
        info = node.info("replication")
    return bool(info.get("role") == "master" or info.get("master_link_status") == "up")


class RedisClusterSet:
    """A Redis Cluster on loopback: three primaries, a replica each, the
    slots spread by ``redis-cli --cluster create`` (as an operator of one
    would), ready when every slot is served; with ``tls``, every node, its
    bus and its replication on TLS only (``rediss+cluster://``)."""

    def __init__(self, bed: Testbed, host: str = "127.0.0.1", tls: TlsFiles | None = None) -> None:
        self.host, self.tls = host, tls
        options: tuple[str, ...] = ("--cluster-enabled", "yes", "--cluster-config-file",
                                    "nodes.conf", "--cluster-node-timeout", "2000")  # fmt: skip
        if tls is not None:
            options += ("--tls-cluster", "yes", "--tls-replication", "yes")
        self.nodes = [
            RedisServer(bed, host, extra=options, port=bus_port(host), tls=tls) for _ in range(6)
        ]
        addresses = [f"{host}:{node.port}" for node in self.nodes]
        on_tls = ["--tls", "--cacert", str(tls.ca)] if tls is not None else []
        subprocess.run(
            [which("redis-cli"), *on_tls, "--cluster", "create", *addresses,
             "--cluster-replicas", "1", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip

        def settled() -> bool:
            with self.node(self.nodes[0].port) as node:
                info = node.execute_command("CLUSTER", "INFO")
                slots = node.execute_command("CLUSTER", "SLOTS")
            text = info if isinstance(info, str) else str(info)
            served = "cluster_state:ok" in text and "cluster_slots_ok:16384" in text
            # Each primary's replica known (a client learns of it from CLUSTER
            # SLOTS) and in sync: ready to be promoted.
            return (
                served
                and all(len(span) >= 4 for span in slots)
                and all(replica_synced(self.node(n.port)) for n in self.nodes)
            )

        wait_until(settled, 30, "the Redis Cluster to serve every slot, replicas in sync",
                   interval=0.1)  # fmt: skip

    def node(self, port: int) -> Any:
        """A client of one node alone (on TLS where the cluster is)."""
        return one_server(self.host, port, self.tls)

    @property
    def url(self) -> str:
        scheme = "rediss+cluster" if self.tls is not None else "redis+cluster"
        return f"{scheme}://{self.host}:{self.nodes[0].port},{self.host}:{self.nodes[1].port}"

    def primary_for(self, key: str) -> RedisServer | None:
        """The node that serves ``key``'s slot now, as a live node sees the
        cluster; None while no primary that is up serves it."""
        live = {node.port: node for node in self.nodes if node.proc and node.proc.poll() is None}
        with self.node(next(iter(live))) as node:
            slot = int(node.execute_command("CLUSTER", "KEYSLOT", key))
            table = str(node.execute_command("CLUSTER", "NODES"))
        for line in table.splitlines():
            (
                _,
                address,
                flags,
                *_,
            ) = line.split()
            if "master" not in flags.split(",") or "fail" in flags:
                continue
            for span in line.split()[8:]:
                first, _, last = span.partition("-")
                if first.isdigit() and int(first) <= slot <= int(last or first):
                    return live.get(int(address.split("@")[0].rpartition(":")[2]))
        return None
