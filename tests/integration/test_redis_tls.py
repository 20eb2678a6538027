"""A Redis that speaks TLS only (rediss://), as most managed offerings do:
the pool commands, a pool client and a run's store reach it with its CA
(PROXYREFRESH_REDIS_CA_FILE), and without the CA the command says in one
line that the server's certificate could not be verified."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from proxyrefresh.constants import RUNS
from proxyrefresh.models import Anonymity, Protocol
from proxyrefresh.pool import AsyncPool, PoolEntry
from proxyrefresh.settings import RedisSettings
from tests.conftest import run_cli
from tests.harness import testbed as tb
from tests.harness.testbed import RedisServer, TlsFiles

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    bed = tb.Testbed()
    try:  # a server that does not start still leaves nothing behind
        server = RedisServer(bed, tls=TlsFiles.make(tmp_path_factory.mktemp("tls")))
        yield server
        server.stop()
    finally:
        bed.close()


def ca_of(server: RedisServer) -> Path:
    assert server.tls is not None
    return server.tls.ca


async def test_the_pool_and_a_run_work_over_tls_and_the_cli_reads_them(
    tls_redis: RedisServer,
) -> None:
    settings = RedisSettings(url=tls_redis.url, ca_file=str(ca_of(tls_redis)))
    redis = settings.client(retries=0)
    try:
        entry = PoolEntry(
            proxy="http://127.0.0.41:8080",
            protocol=Protocol.HTTP,
            host="127.0.0.41",
            port=8080,
            anonymity=Anonymity.ELITE,
            last_checked=time.time(),
            last_ok=time.time(),
        )
        await AsyncPool(redis, "eu", "team").merge("u-tls", [(entry.proxy, True, entry)], 3600)
        store = RUNS.store(redis, "u-tls-run")
        assert await store.write_chunks([[1, 2], [3]]) == 2
        assert (await store.progress()).total_chunks == 2
    finally:
        await redis.aclose()
    env = {
        "PROXYREFRESH_REDIS_URL": tls_redis.url,
        "PROXYREFRESH_REDIS_CA_FILE": str(ca_of(tls_redis)),
    }
    stats = run_cli("pool", "stats", "eu", "-n", "team", "--json", env=env)
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["size"] == 1


def test_without_its_ca_the_cli_says_the_certificate_is_not_trusted(
    tls_redis: RedisServer,
) -> None:
    out = run_cli(
        "pool", "stats", "eu", "-n", "team", env={"PROXYREFRESH_REDIS_URL": tls_redis.url}
    )
    assert out.returncode != 0
    (line,) = out.stderr.strip().splitlines()
    assert "certificate verify failed" in line, out.stderr


def test_a_ca_file_for_a_plain_url_is_refused_by_name() -> None:
    env = {"PROXYREFRESH_REDIS_URL": "redis://127.0.0.1:1/0", "PROXYREFRESH_REDIS_CA_FILE": "/x"}
    out = run_cli("pool", "stats", "eu", "-n", "team", env=env)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "proxyrefresh: environment: PROXYREFRESH_REDIS_CA_FILE is for a rediss:// URL (TLS, "
        "as are rediss+sentinel:// and rediss+cluster://); the URL is not one"
    ], out.stderr
    with pytest.raises(ValidationError, match="a client certificate needs its key"):
        RedisSettings(url="rediss://127.0.0.1:1/0", cert_file="/c.pem")


def test_the_ca_as_pem_text_is_what_a_worker_is_handed(tls_redis: RedisServer) -> None:
    """A worker cannot read the operator's CA file: the operator hands it
    the PEM text (PROXYREFRESH_REDIS_CA_DATA), which verifies the server
    as the file does. One form only: both at once is refused."""
    pem = ca_of(tls_redis).read_text()
    operator = RedisSettings(url=tls_redis.url, ca_file=str(ca_of(tls_redis)))
    assert operator.ca_pem() == pem
    worker = RedisSettings(url=tls_redis.url, ca_data=pem).sync_client()
    worker.hset("proxyrefresh:pem-check", "worker", "1")  # a worker's write, over TLS
    env = {"PROXYREFRESH_REDIS_URL": tls_redis.url, "PROXYREFRESH_REDIS_CA_DATA": pem}
    stats = run_cli("pool", "stats", "nowhere", "-n", "team", env=env)
    assert stats.returncode == 4, stats.stderr  # through TLS to an answer: no such pool
    assert operator.sync_client().hget("proxyrefresh:pem-check", "worker") == "1"
    with pytest.raises(ValidationError, match="as a file or as PEM text, not both"):
        RedisSettings(url=tls_redis.url, ca_file="/ca.pem", ca_data=pem)


async def test_a_lone_redis_has_no_replica_to_wait_for(tls_redis: RedisServer) -> None:
    """The operator waits for a replica's acknowledgement of a merge only
    where there is a replica: a lone server answers at once."""
    from proxyrefresh.redis_topology import replicated

    redis = RedisSettings(url=tls_redis.url, ca_file=str(ca_of(tls_redis))).client(retries=0)
    try:
        assert await replicated(redis) is None
    finally:
        await redis.aclose()
