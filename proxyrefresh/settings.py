"""Configuration: the resource spec first, then the environment, then defaults.

Every knob lives in one settings class, read by :meth:`EnvSettings.from_env`
(``PROXYREFRESH_*``), with explicit values (command-line flags, a
resource's spec) laid over it by :meth:`EnvSettings.overlay`; nothing else
reads the product's variables. Here are the settings more than one part
reads: the checker's and the pod's (the operator writes them into a Job
with :meth:`EnvSettings.env_of`, the worker reads them back), the network
guard's and Redis's. Each plane keeps its own beside it:
operator/settings.py, worker/rotate_settings.py.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from proxyrefresh.models import Anonymity, Protocol, TargetSpec

if TYPE_CHECKING:  # aiohttp and redis only where used, not at every CLI start
    from redis import Redis as SyncRedis
    from redis.asyncio import Redis

    from proxyrefresh.netguard import NetworkGuard


# JSON in a variable: what a list (or a model, or a mapping) is written as.
_STRUCTURED = (list, tuple, set, frozenset, dict)


def _structured(annotation: Any) -> bool:
    """A field whose variable holds JSON: a list, a mapping or a model,
    alone or in a union with None."""
    origin = typing.get_origin(annotation)
    if origin is None:
        return isinstance(annotation, type) and issubclass(annotation, (BaseModel, *_STRUCTURED))
    if origin in _STRUCTURED:
        return True
    return any(_structured(arg) for arg in typing.get_args(annotation) if arg is not type(None))


def _variables(prefix: str, name: str, info: FieldInfo) -> list[str]:
    """The variables a field is read from: its validation aliases, else the
    prefix and its name (in upper case; any case matches)."""
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return [choice for choice in alias.choices if isinstance(choice, str)]
    if isinstance(alias, str):
        return [alias]
    return [f"{prefix}{name}".upper()]


class EnvSettings(BaseModel):
    """A settings model whose :meth:`from_env` reads each field from the
    environment, and whose :meth:`overlay` lays explicit values over it.

    It does for these flat models what pydantic-settings did, by the same
    rules (``env_prefix`` plus the field's name, any case; a validation
    alias names its variables instead; a list's value is JSON), without
    what pydantic-settings imports for its other sources (argparse, dotenv,
    zoneinfo, tempfile, zipfile...): about 12 ms of the start-up of
    ``proxyrefresh check`` and of every Job pod. A value that is not JSON
    where JSON is wanted is left as it is, so validation names the field
    (pydantic-settings raised an error of its own instead)."""

    # Built when first validated: a command uses one or two of these classes.
    model_config = ConfigDict(extra="ignore", defer_build=True)
    env_prefix: ClassVar[str] = "PROXYREFRESH_"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        """These settings from the environment (``os.environ`` unless
        given), then defaults; ValidationError names a bad field."""
        source = os.environ if environ is None else environ
        env = {key.upper(): value for key, value in source.items()}
        data: dict[str, Any] = {}
        for name, info in cls.model_fields.items():
            for variable in _variables(cls.env_prefix, name, info):
                value = env.get(variable.upper())
                if value is not None:
                    key = variable if info.validation_alias else name
                    data[key] = _decoded(value, info.annotation)
                    break
        return cls.model_validate(data)

    @classmethod
    def explain(cls, exc: ValidationError) -> str:
        """A validation error of :meth:`from_env` in the words of whoever set
        the environment: each problem under the variable it came from."""

        def where(loc: tuple[int | str, ...]) -> str:
            field = cls.model_fields.get(str(loc[0])) if loc else None
            if field is None:  # an alias already is the variable's name
                return ".".join(map(str, loc)) or "environment"
            rest = "".join(f"[{part}]" for part in loc[1:])
            return _variables(cls.env_prefix, str(loc[0]), field)[0] + rest

        return "; ".join(
            f"{where(e['loc'])}: {str(e['msg']).removeprefix('Value error, ')}"
            for e in exc.errors()
        )

    @classmethod
    def variable(cls, name: str) -> str:
        """The variable field ``name`` is read from (its first, if several)."""
        return _variables(cls.env_prefix, name, cls.model_fields[name])[0]

    @classmethod
    def env_of(cls, **values: Any) -> list[dict[str, str]]:
        """Env entries (a container's ``env``) that :meth:`from_env` reads
        back as ``values``; None is left out. The class that reads a pod's
        environment writes it, so the two cannot drift apart; a name it does
        not read is a KeyError here, not a variable nobody reads."""
        entries = []
        for name, value in values.items():
            if value is None:
                continue
            annotation = cls.model_fields[name].annotation
            if annotation is not None and _structured(annotation):
                dumped = TypeAdapter(annotation).dump_python(value, mode="json", by_alias=True)
                text = json.dumps(dumped)
            elif isinstance(value, bool):
                text = str(value).lower()
            else:
                text = str(getattr(value, "value", value))  # an enum's value
            entries.append({"name": cls.variable(name), "value": text})
        return entries

    def overlay(self, **explicit: Any) -> Self:
        """These settings with every explicit (non-None) value laid over them
        (command-line flags, a resource's spec), validated again so a bad
        flag fails like a bad variable."""
        merged = self.model_dump()
        merged.update({k: v for k, v in explicit.items() if v is not None})
        return self.model_validate(merged)


def _decoded(value: str, annotation: Any) -> Any:
    """A variable's value as validation should see it: JSON decoded for a
    structured field, the string as it is otherwise (or when it is not JSON)."""
    if not _structured(annotation):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


class CheckerSettings(EnvSettings):
    """How proxies are checked (``spec.checker`` and ``spec.filter``)."""

    engine: str = "native"
    judges: list[str] = Field(default_factory=list)
    timeout: float = Field(default=10.0, gt=0)
    connect_timeout: float | None = Field(default=None, gt=0)
    concurrency: int = Field(default=256, ge=1, le=10_000)
    targets: list[TargetSpec] = Field(default_factory=list)
    min_anonymity: Anonymity = Anonymity.TRANSPARENT
    max_latency_ms: float | None = Field(default=None, gt=0)
    default_protocol: Protocol = Protocol.HTTP
    max_input_bytes: int = Field(default=64 * 1024 * 1024, gt=0)

    @field_validator("judges")
    @classmethod
    def _judge_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not re.match(r"^https?://[^\s/?#]+", url):
                raise ValueError(f"{url!r} is not an http(s) URL")
        return value


class NetworkSettings(EnvSettings):
    """Where fetches of a tenant's URLs may go (proxyrefresh.netguard).

    The guard is on by default: sources, judges and targets that resolve to
    loopback, link-local, private, unique-local, multicast, unspecified or
    cluster-internal addresses are refused. The installer loosens it here,
    and only here; the operator hands the same rule to its workers."""

    env_prefix = "PROXYREFRESH_NETWORK_"

    guard: bool = True
    allowed: list[str] = Field(default_factory=list)  # CIDRs reachable anyway
    internal: list[str] = Field(default_factory=list)  # the cluster's service and pod CIDRs

    @field_validator("allowed", "internal")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for network in value:
            ipaddress.ip_network(network, strict=False)  # ValueError names it
        return value

    def guard_rule(self) -> NetworkGuard:
        from proxyrefresh.netguard import NetworkGuard

        return NetworkGuard.build(self.guard, self.allowed, self.internal)

    def env(self) -> list[dict[str, str]]:
        """The same rule for a worker pod, as env entries."""
        return self.env_of(guard=self.guard, allowed=self.allowed, internal=self.internal)


class RedisSettings(EnvSettings):
    """Where the fan-out state lives (one URL for the operator and its pods)."""

    env_prefix = "PROXYREFRESH_REDIS_"

    url: str = "redis://127.0.0.1:6379/0"  # redis://, rediss://, user:password@, /db
    key_ttl_seconds: int = Field(default=24 * 3600, ge=60)
    # A brief outage is ridden out with jittered exponential backoff; past
    # this many attempts the caller gets the error (a pod then exits 69).
    retries: int = Field(default=8, ge=0)
    backoff_cap_seconds: float = Field(default=4.0, gt=0)
    socket_timeout_seconds: float = Field(default=10.0, gt=0)
    # The operator's connections for commands (its pub/sub has one of its
    # own): past this many a command waits for a free one, up to the socket
    # timeout, instead of failing as redis-py's default pool does at 100.
    max_connections: int = Field(default=32, ge=2)
    # rediss:// only: the PEM bundle that signed the server's certificate
    # (else the system's), and a client certificate and key where the server
    # asks for one. The server's certificate is always verified.
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    # The same CA bundle as PEM text (a chart's env from a Secret or
    # ConfigMap key; the operator hands its own to the workers this way).
    ca_data: str | None = None
    # redis+sentinel:// only: the sentinels' own password, if they ask for one.
    sentinel_password: str | None = None

    @model_validator(mode="after")
    def _sentinel_url_names_its_service(self) -> Self:
        from proxyrefresh.redis_topology import (
            cluster_target,
            is_cluster,
            is_sentinel,
            sentinel_target,
        )

        if is_sentinel(self.url):
            sentinel_target(self.url)  # ValueError says what is missing
        elif is_cluster(self.url):
            cluster_target(self.url)
        elif self.sentinel_password:
            raise ValueError(f"{self.variable('sentinel_password')} is for a redis+sentinel:// URL")
        return self

    @model_validator(mode="after")
    def _tls_files_need_tls(self) -> Self:
        from proxyrefresh.redis_topology import uses_tls

        given = [n for n in ("ca_file", "ca_data", "cert_file", "key_file") if getattr(self, n)]
        if given and not uses_tls(self.url):
            names = ", ".join(self.variable(n) for n in given)
            raise ValueError(
                f"{names} is for a rediss:// URL (TLS, as are rediss+sentinel:// and "
                "rediss+cluster://); the URL is not one"
            )
        if self.ca_file and self.ca_data:
            raise ValueError("give the CA as a file or as PEM text, not both")
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("a client certificate needs its key, and a key its certificate")
        return self

    def tls_options(self) -> dict[str, Any]:
        """redis-py's TLS options for this URL (none for redis://)."""
        from proxyrefresh.redis_topology import uses_tls

        if not uses_tls(self.url):
            return {}
        given = {"ssl_ca_certs": self.ca_file, "ssl_ca_data": self.ca_data,
                 "ssl_certfile": self.cert_file, "ssl_keyfile": self.key_file}  # fmt: skip
        return {"ssl_cert_reqs": "required", **{k: v for k, v in given.items() if v}}

    def ca_pem(self) -> str | None:
        """The CA bundle as PEM text, from whichever form it was given in
        (what the operator hands its workers: they cannot read its files)."""
        if self.ca_data:
            return self.ca_data
        if self.ca_file and self.tls_options():
            return Path(self.ca_file).read_text()
        return None

    def client(
        self,
        retries: int | None = None,
        timeout: float | None = None,
        max_connections: int | None = None,
    ) -> Redis:
        """The asyncio client; a caller someone waits on (the rotator) asks
        for fewer ``retries`` and a shorter ``timeout`` than a pod rides out.
        With ``max_connections``, commands share that many connections and
        wait their turn."""
        from redis.asyncio import BlockingConnectionPool, Redis
        from redis.backoff import ExponentialWithJitterBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        retry = _login_final_retry()(
            ExponentialWithJitterBackoff(base=0.1, cap=self.backoff_cap_seconds),
            self.retries if retries is None else retries,
        )
        seconds = self.socket_timeout_seconds if timeout is None else timeout
        options: dict[str, Any] = {
            "decode_responses": True,
            "retry": retry,
            "retry_on_error": [RedisConnectionError, RedisTimeoutError],
            "socket_timeout": seconds,
            "socket_connect_timeout": seconds,
            "health_check_interval": 30,
            **self.tls_options(),
        }
        bound = None if max_connections is None else {"max_connections": max_connections}
        topology = self._topology(options, asyncio=True, bound=bound)
        if topology is not None:
            return topology  # type: ignore[no-any-return]
        if max_connections is None:
            return Redis.from_url(self.url, **options)
        pool = BlockingConnectionPool.from_url(
            self.url, max_connections=max_connections, timeout=seconds, **options
        )
        return Redis.from_pool(pool)

    def _topology(
        self, options: dict[str, Any], asyncio: bool, bound: dict[str, int] | None = None
    ) -> Any:
        """The client a Sentinel or Cluster URL names, of redis-py's asyncio
        or blocking classes (None: the URL names one server). ``bound``: at
        most that many connections, commands waiting for a free one."""
        from proxyrefresh.redis_topology import (
            cluster_target,
            is_cluster,
            is_sentinel,
            sentinel_target,
        )

        if is_sentinel(self.url):
            if asyncio:
                from redis.asyncio.sentinel import Sentinel
            else:
                from redis.sentinel import Sentinel  # type: ignore[assignment]
            target = sentinel_target(self.url)
            pool: dict[str, Any] = {}
            if bound:  # redis-py's Sentinel pool raises past its bound: this one waits
                pool = {**bound, "timeout": options["socket_timeout"],
                        "connection_pool_class": _sentinel_blocking_pool()}  # fmt: skip
            sentinels = Sentinel(
                target.nodes, sentinel_kwargs=self._sentinel_kwargs(options["socket_timeout"])
            )
            return sentinels.master_for(
                target.service,
                db=target.db,
                username=target.username,
                password=target.password,
                connection_class=_sentinel_connection(asyncio, bool(self.tls_options())),
                **options,
                **pool,
            )
        if is_cluster(self.url):
            if asyncio:
                from redis.asyncio.cluster import ClusterNode, RedisCluster
            else:
                from redis.cluster import ClusterNode, RedisCluster  # type: ignore[assignment]
            seeds = cluster_target(self.url)
            kept: dict[str, Any] = {k: v for k, v in options.items() if k != "retry_on_error"}
            return RedisCluster(
                startup_nodes=[ClusterNode(host, port) for host, port in seeds.nodes],
                username=seeds.username,
                password=seeds.password,
                **kept | (bound or {}) | ({"ssl": True} if self.tls_options() else {}),
            )
        return None

    def _sentinel_kwargs(self, timeout: float) -> dict[str, Any]:
        """How to reach the sentinels: on TLS too with rediss+sentinel://,
        verified with the same CA."""
        tls = self.tls_options()
        return {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            **({"password": self.sentinel_password} if self.sentinel_password else {}),
            **({"ssl": True, **tls} if tls else {}),
        }

    def sync_client(self, timeout: float = 3.0) -> SyncRedis:
        """A blocking client for one-shot commands (``proxyrefresh pool``):
        a person waits on it, so it gives up within ``timeout`` seconds."""
        from redis import Redis as BlockingRedis

        options: dict[str, Any] = {
            "decode_responses": True,
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            **self.tls_options(),
        }
        topology = self._topology(options, asyncio=False)
        if topology is not None:
            return topology  # type: ignore[no-any-return]
        return BlockingRedis.from_url(self.url, **options)


@functools.cache
def _sentinel_connection(asyncio: bool, tls: bool) -> Any:
    """redis-py's connection to the primary that Sentinel names, except that
    it asks the sentinels again whenever it reconnects. Its own asks only in
    ``connect()``, but a retried command reconnects through the plain
    connection's path, to the address it had: through a failover a command
    retried against the dead primary until the retries ran out (15 s here,
    bench/redis_failover.py), where asking again finds the promoted replica
    as soon as the sentinels name it (3 s)."""
    if asyncio:
        from redis.asyncio import sentinel as managed

        class AsyncReconnecting(managed.SentinelManagedConnection):
            async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
                if not self.is_connected:
                    await self.connect()  # type: ignore[no-untyped-call]
                await super().send_packed_command(command, check_health)

        class AsyncReconnectingTls(AsyncReconnecting, managed.SentinelManagedSSLConnection):
            pass

        return AsyncReconnectingTls if tls else AsyncReconnecting
    from redis import sentinel as blocking

    class Reconnecting(blocking.SentinelManagedConnection):
        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            if not self._sock:
                self.connect()  # type: ignore[no-untyped-call]
            super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]

    class ReconnectingTls(Reconnecting, blocking.SentinelManagedSSLConnection):
        pass

    return ReconnectingTls if tls else Reconnecting


@functools.cache
def _sentinel_blocking_pool() -> Any:
    """Sentinel's pool that waits for a free connection, as the plain URL's
    does (BlockingConnectionPool), instead of raising "Too many connections"
    (redis-py has no such class of its own: its Sentinel pool decides where
    to connect, its blocking pool when; neither overrides what the other does)."""
    from redis.asyncio import BlockingConnectionPool
    from redis.asyncio.sentinel import SentinelConnectionPool

    class SentinelBlockingConnectionPool(SentinelConnectionPool, BlockingConnectionPool):
        pass

    return SentinelBlockingConnectionPool


def _login_final_retry() -> Any:
    """redis-py's asyncio Retry, except that a refused login is final.

    redis-py counts AuthenticationError as a ConnectionError, so it retries
    it with the rest; but a password refused stays refused. A worker whose
    run was deleted (its Redis user revoked with it) would ride out every
    retry, up to half a minute of backoff, before it could obey SIGTERM."""
    from redis.asyncio.retry import Retry
    from redis.exceptions import AuthenticationError

    class Refused(Exception):
        """Carries the refusal past the retry loop, which does not know it."""

        def __init__(self, error: AuthenticationError) -> None:
            self.error = error

    class LoginFinalRetry(Retry):
        async def call_with_retry(self, do: Any, fail: Any, *args: Any, **kwargs: Any) -> Any:
            async def once() -> Any:
                try:
                    return await do()
                except AuthenticationError as exc:
                    raise Refused(exc) from exc

            try:
                return await super().call_with_retry(once, fail, *args, **kwargs)
            except Refused as refused:
                # The failure handler cleans the connection up, as for any error.
                if kwargs.get("with_failure_count"):
                    await fail(refused.error, 1)
                else:
                    await fail(refused.error)
                raise refused.error from None

    return LoginFinalRetry


class WorkerSettings(EnvSettings):
    """What a Job pod is told through its environment."""

    run_id: str = Field(min_length=1)  # the resource's uid: the Redis hash tag
    # Set by the Job controller for Indexed Jobs (no prefix).
    job_completion_index: int = Field(
        ge=0, validation_alias=AliasChoices("JOB_COMPLETION_INDEX", "PROXYREFRESH_INDEX")
    )
    chunk_seconds: float | None = Field(default=None, gt=0)  # the pod's hard deadline
    soft_deadline_fraction: float = Field(default=0.85, gt=0, le=1)
    progress_interval_seconds: float = Field(default=1.0, gt=0)
    # Chunks at work at once when the Job runs pods ahead (fanout.job's slots_env).
    slots: int | None = Field(default=None, ge=1)

    @property
    def soft_deadline_seconds(self) -> float | None:
        """Stop this much after start, before the hard deadline kills us."""
        if self.chunk_seconds is None:
            return None
        return self.chunk_seconds * self.soft_deadline_fraction
