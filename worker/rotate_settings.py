"""The rotator's settings, from its environment; ``proxyrefresh rotate``'s flags lay over them."""

from __future__ import annotations

from pydantic import Field

from proxyrefresh.models import Anonymity, Protocol
from proxyrefresh.settings import EnvSettings


class RotatorSettings(EnvSettings):
    """How ``proxyrefresh rotate`` serves a pool (flags lay over these)."""

    env_prefix = "PROXYREFRESH_ROTATOR_"

    # Filters every request of the listener gets; a client may narrow them
    # (X-Proxyrefresh-* headers, or its proxy user name).
    protocol: Protocol | None = None
    min_anonymity: Anonymity | None = None
    max_latency_ms: float | None = Field(default=None, gt=0)
    # Other upstreams a request may try after one failed (invisibly to the client).
    retries: int = Field(default=2, ge=0, le=20)
    connect_timeout: float = Field(default=5.0, gt=0)  # upstream connect or tunnel handshake
    answer_timeout: float = Field(default=30.0, gt=0)  # upstream's response head
    idle_timeout: float = Field(default=60.0, gt=0)  # a kept-alive client's next request
    session_seconds: float = Field(default=600.0, gt=0)  # a sticky session's life
    max_sessions: int = Field(default=100_000, ge=1)
    # Basic credentials clients must give (from a Secret); none: open to
    # whoever reaches the port (the chart's NetworkPolicy decides who can).
    username: str | None = None
    password: str | None = None
    # Failure reports one client may make a minute over the JSON API (each
    # also needs its proxy's lease, and counts once per proxy).
    report_failures_per_minute: int = Field(default=30, ge=1)
    # Acceptor processes on the listening port (SO_REUSEPORT): one uses one
    # core; sticky sessions hold across them (worker/acceptors.py).
    workers: int = Field(default=1, ge=1, le=64)

    @property
    def auth_required(self) -> bool:
        return self.password is not None
