"""The ProxyRefresh resource as typed models: the one description of the
spec and status. The CRD's schema is generated from these models
(``proxyrefresh.operator.crd``), so the API server and the code cannot drift.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from proxyrefresh import redact
from proxyrefresh.models import Anonymity, Protocol


class Camel(BaseModel):
    """Kubernetes spells fields in camelCase; Python keeps snake_case."""

    model_config = ConfigDict(
        populate_by_name=True,
        alias_generator=lambda name: (
            name.split("_")[0] + "".join(part.title() for part in name.split("_")[1:])
        ),
        extra="forbid",
    )


class Engine(StrEnum):
    NATIVE = "native"
    MUBENG = "mubeng"


class ConcurrencyPolicy(StrEnum):
    ALLOW = "Allow"
    FORBID = "Forbid"
    REPLACE = "Replace"


class Phase(StrEnum):
    PENDING = "Pending"
    SCRAPING = "Scraping"
    DISPATCHED = "Dispatched"
    PROCESSING = "Processing"
    MERGING = "Merging"
    COMPLETE = "Complete"
    FAILED = "Failed"

    @property
    def terminal(self) -> bool:
        return self in (Phase.COMPLETE, Phase.FAILED)


# What the API server accepts as an object's name (DNS-1123 subdomain) and
# as a ConfigMap key: checked at admission, so no refresh is accepted that
# could never write or read them.
OBJECT_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DATA_KEY = r"^[-._a-zA-Z0-9]+$"
# A refresh's name becomes a label value and part of its Job's name.
REFRESH_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
REFRESH_NAME_MAX = 63
ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=OBJECT_NAME)]


class LocalObjectRef(Camel):
    name: ObjectName


class KeyRef(Camel):
    name: ObjectName
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=DATA_KEY)] = "proxies.txt"


URL_PATTERN = r"^https?://[^\s/$.?#].[^\s]*$"


class Source(Camel):
    """Where candidates come from: exactly one of url, configMapRef, inline."""

    url: Annotated[str | None, Field(pattern=URL_PATTERN, max_length=2048)] = None
    protocol: Protocol = Protocol.HTTP  # for bare host:port lines
    headers_secret_ref: LocalObjectRef | None = None
    config_map_ref: KeyRef | None = None
    inline: Annotated[list[str] | None, Field(max_length=100_000)] = None

    @property
    def label(self) -> str:
        if self.url:
            return f"url {redact.url(self.url)}"
        if self.config_map_ref:
            return f"configMap {self.config_map_ref.name}/{self.config_map_ref.key}"
        return f"inline ({len(self.inline or [])} lines)"


class Target(Camel):
    url: Annotated[str, Field(pattern=URL_PATTERN)]
    expect_status: Annotated[int, Field(ge=100, le=599)] = 200


class Checker(Camel):
    engine: Engine = Engine.NATIVE
    timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 10
    connect_timeout_seconds: Annotated[float | None, Field(gt=0, le=300)] = None
    concurrency: Annotated[int, Field(ge=1, le=4096)] = 256
    judges: Annotated[list[Annotated[str, Field(pattern=URL_PATTERN)]], Field(min_length=1)]
    targets: list[Target] = Field(default_factory=list)


class Filter(Camel):
    min_anonymity: Anonymity = Anonymity.ANONYMOUS
    max_latency_ms: Annotated[float | None, Field(gt=0)] = None


class Retry(Camel):
    backoff_limit_per_index: Annotated[int, Field(ge=0, le=20)] = 2
    # The Job API's own bound; above the chunk count it is clamped at dispatch.
    max_failed_indexes: Annotated[int | None, Field(ge=0, le=100_000)] = None


class Deadlines(Camel):
    chunk_seconds: Annotated[int, Field(ge=10, le=86_400)] = 900


class CredentialsExport(StrEnum):
    """What the output ConfigMap, which anyone with `view` reads, shows of
    proxies with credentials: Omit keeps them out of live_proxies.txt and
    masks their passwords in live_proxies.json (the pool in Redis keeps them
    whole); Include writes them whole (loosens: docs/security.md)."""

    OMIT = "Omit"
    INCLUDE = "Include"


class Output(Camel):
    """The ConfigMap export of the pool: its best entries, within max_bytes
    (a ConfigMap holds at most 1 MiB; the pool itself is in Redis)."""

    config_map: ObjectName | None = None
    credentials: CredentialsExport = CredentialsExport.OMIT
    max_bytes: Annotated[int, Field(ge=4096, le=1_000_000)] = 900_000


# A number of items per chunk, or "auto": the operator picks it from the
# candidates, parallelism, concurrency and deadline (operator/chunking.py).
ChunkSize = Annotated[
    Annotated[int, Field(ge=1, le=10_000)] | Literal["auto"],
    Field(json_schema_extra={"x-kubernetes-int-or-string": True}),
]

PoolName = Annotated[
    str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
]


class RefreshTemplate(Camel):
    """Everything of a refresh but its pool: what a ProxyPool keeps to start
    refreshes from (refills, ``proxyrefresh create --pool``)."""

    sources: Annotated[list[Source], Field(min_length=1, max_length=100)]
    chunk_size: ChunkSize = "auto"
    parallelism: Annotated[int, Field(ge=1, le=1000)] = 10
    # Pods started ahead while more chunks wait than run: each gets ready and
    # takes the next free slot the moment a chunk ends (fanout.slots), so a
    # wave of pods costs no start-up time. They hold their resource requests
    # while they wait. Unset: as many as parallelism; 0: none.
    ready_pods: Annotated[int | None, Field(ge=0, le=1000)] = None
    checker: Checker
    filter: Filter = Field(default_factory=Filter)
    retry: Retry = Field(default_factory=Retry)
    deadlines: Deadlines = Field(default_factory=Deadlines)
    min_usable: Annotated[int, Field(ge=0, le=1_000_000)] = 5
    concurrency_policy: ConcurrencyPolicy = ConcurrencyPolicy.FORBID
    output: Output = Field(default_factory=Output)


class ProxyRefreshSpec(RefreshTemplate):
    pool: PoolName = "default"

    @property
    def output_config_map(self) -> str:
        return self.output.config_map or f"{self.pool}-proxies"


class Scoring(Camel):
    """How consumer reports and refreshes move a proxy's score (seed 002)."""

    success: Annotated[float, Field(ge=1, le=10)] = 1.1
    failure: Annotated[float, Field(gt=0, le=1)] = 0.5
    max_failures: Annotated[int, Field(ge=1, le=100)] = 3
    min_score: Annotated[float, Field(ge=0, le=1)] = 0.01
    max_score: Annotated[float, Field(ge=1, le=1e12)] = 10.0


class ProxyPoolSpec(Camel):
    """The long-lived pool refreshes merge into, as a Deployment is to its
    ReplicaSets: the refresh to start from, when to start one by itself,
    how it scores, how long an unconfirmed proxy stays."""

    template: RefreshTemplate
    min_usable: Annotated[int, Field(ge=0, le=1_000_000)] = 0  # 0: never refill
    refill_cooldown_seconds: Annotated[int, Field(ge=1, le=86_400)] = 300
    scoring: Scoring = Field(default_factory=Scoring)
    max_age_seconds: Annotated[int | None, Field(ge=60, le=90 * 86_400)] = None
    output: Output | None = None  # the export; else the refresh template's

    def refresh_spec(self, pool: str) -> ProxyRefreshSpec:
        spec = self.template.model_copy(update={"output": self.output or self.template.output})
        return ProxyRefreshSpec.model_validate({**spec.model_dump(by_alias=True), "pool": pool})


class SourceStatus(Camel):
    source: str
    ok: bool
    candidates: int = 0
    errors: int = 0
    message: str = ""


DateTime = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(Camel):
    """A Kubernetes condition, as `kubectl wait` reads it."""

    type: str
    status: ConditionStatus
    reason: str | None = None
    message: str | None = None
    last_transition_time: DateTime | None = None
    observed_generation: int | None = None


STALLED = "Stalled"  # the condition that says why a refresh or a pool does not move


def true_condition(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """The condition ``kind`` of a status (a plain dict), if it is True."""
    for cond in status.get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return dict(cond)
    return None


# Conditions as a map keyed by type: `kubectl wait` and server-side apply
# treat each type as one entry.
Conditions = Annotated[
    list[Condition] | None,
    Field(
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}
    ),
]


class AnonymityCounts(Camel):
    transparent: int | None = None
    anonymous: int | None = None
    elite: int | None = None


class ProxyRefreshStatus(Camel):
    """What the operator reports; the CRD's status schema is generated from
    it like the spec's, and every status write is checked against it."""

    model_config = ConfigDict(extra="allow")  # the schema preserves unknown fields too

    phase: Phase | None = None
    message: str | None = None
    candidates: int | None = None
    chunk_size: int | None = None  # the size dispatched (what auto chose)
    total_chunks: int | None = None
    completed_chunks: int | None = None
    failed_chunks: int | None = None
    checked: int | None = None
    live: int | None = None
    usable: int | None = None
    unchecked: int | None = None
    pool_size: int | None = None
    exported: int | None = None
    progress: str | None = None
    anonymity: AnonymityCounts | None = None
    job_name: str | None = None
    started_at: DateTime | None = None
    completed_at: DateTime | None = None
    observed_generation: int | None = None
    sources: list[SourceStatus] | None = None
    # The operator process scraping it, and how many scrapes of it died with
    # their process: past the limit it fails instead of killing the next.
    scrape_by: str | None = None
    scrape_crashes: int | None = None
    conditions: Conditions = None


class ProtocolCounts(Camel):
    http: int | None = None
    https: int | None = None
    socks4: int | None = None
    socks5: int | None = None


class ProxyPoolStatus(Camel):
    """What the operator reports of a pool (its schema is generated, like
    the refresh's)."""

    model_config = ConfigDict(extra="allow")

    size: int | None = None
    usable: int | None = None
    exported: int | None = None
    protocols: ProtocolCounts | None = None
    anonymity: AnonymityCounts | None = None
    last_refresh: str | None = None
    last_refresh_at: DateTime | None = None
    refills_started: int | None = None
    last_refill: str | None = None
    last_refill_at: DateTime | None = None
    observed_generation: int | None = None
    conditions: Conditions = None


def dump(model: BaseModel) -> dict[str, Any]:
    """A model as the API server wants it: camelCase, no nulls."""
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def _is_union_arm(part: int | str) -> bool:
    """A step of an error's location that names a union's arm
    (``constrained-int``, ``literal['auto']``), not a field."""
    return isinstance(part, str) and ("-" in part or "[" in part or part in _TYPE_NAMES)


_TYPE_NAMES = {"int", "str", "float", "bool", "dict", "list", "none"}
_SUBJECTS = ("Input ", "String ", "Value ", "List ", "Dictionary ", "Number ")


def problems(exc: ValidationError, root: str = "spec") -> str:
    """A validation error as one line a user can act on, each bad field by
    its path as written in YAML (``spec.checker.judges[0]``) and the union
    arms of one field joined with "or": pydantic's own report (types, links
    to its website, one entry per arm) is for developers."""
    rules: dict[str, list[str]] = {}
    for error in exc.errors(include_url=False):
        path = root
        for part in error["loc"]:
            if isinstance(part, int):
                path += f"[{part}]"
            elif not _is_union_arm(part):
                path += f".{part}" if path else str(part)
        rule = str(error["msg"]).removeprefix("Value error, ")
        for subject in _SUBJECTS:
            rule = rule.removeprefix(subject)
        if error["type"] == "string_pattern_mismatch" and error["ctx"]["pattern"] == URL_PATTERN:
            rule = "should be an http:// or https:// URL"
        elif error["type"] == "missing":
            rule = "is required"
        elif error["type"] == "extra_forbidden":
            rule = "is not a field of this resource"
        rules.setdefault(path or root, []).append(rule)
    return "; ".join(f"{path}: {', or '.join(dict.fromkeys(r))}" for path, r in rules.items())
