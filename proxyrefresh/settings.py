"""Configuration: the resource spec first, then the environment, then defaults.

Every knob lives here once. The CLI and the worker build a
:class:`CheckerSettings` from the environment (``PROXYREFRESH_*``) and lay
explicit values (command-line flags, a resource's spec) over it with
:meth:`CheckerSettings.overlay`; nothing reads ``os.environ`` elsewhere.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from proxyrefresh.models import Anonymity, Protocol, TargetSpec


class CheckerSettings(BaseSettings):
    """How proxies are checked (``spec.checker`` and ``spec.filter``)."""

    model_config = SettingsConfigDict(env_prefix="PROXYREFRESH_", extra="ignore")

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

    def overlay(self, **explicit: Any) -> CheckerSettings:
        """These settings with every explicit (non-None) value laid over them,
        validated again so a bad flag fails like a bad variable."""
        merged = self.model_dump()
        merged.update({k: v for k, v in explicit.items() if v is not None})
        return CheckerSettings.model_validate(merged)
