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
        # A field's docstring is its description in the generated CRD, so
        # `kubectl explain` shows what the code says.
        use_attribute_docstrings=True,
    )


class Engine(StrEnum):
    """The checker the worker pods run: native (built in) or mubeng
    (an image built with MUBENG; refused by images without it)."""

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


FINISHED = frozenset(p.value for p in Phase if p.terminal)


def finished(phase: object) -> bool:
    """Whether a phase as a status writes it (a string, or nothing yet)
    has ended: the one spelling of "Complete or Failed"."""
    return phase in FINISHED


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
    """An object in the refresh's own namespace."""

    name: ObjectName
    """Its name."""


class KeyRef(Camel):
    """One key of a ConfigMap in the refresh's own namespace (labelled
    proxyrefresh.dev/source-list=true, so only lists meant as sources are read)."""

    name: ObjectName
    """The ConfigMap's name."""
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=DATA_KEY)] = "proxies.txt"
    """The key holding the list."""


URL_PATTERN = r"^https?://[^\s/$.?#].[^\s]*$"


class Source(Camel):
    """Where candidates come from: exactly one of url, configMapRef, inline."""

    url: Annotated[str | None, Field(pattern=URL_PATTERN, max_length=2048)] = None
    """An http(s) URL of a list in any text form (plain lines, HTML tables,
    JSON); fetched by the operator with retries and a size cap, and only
    from addresses the installer allows."""
    protocol: Protocol = Protocol.HTTP
    """The protocol of bare host:port lines in this source."""
    headers_secret_ref: LocalObjectRef | None = None
    """A Secret whose keys are sent as request headers with url (an API key);
    only if the Secret opts in and only to the hosts it names
    (docs/security.md)."""
    config_map_ref: KeyRef | None = None
    """A ConfigMap key holding a list."""
    inline: Annotated[list[str] | None, Field(max_length=100_000)] = None
    """The list itself, one candidate a line."""

    @property
    def label(self) -> str:
        if self.url:
            return f"url {redact.url(self.url)}"
        if self.config_map_ref:
            return f"configMap {self.config_map_ref.name}/{self.config_map_ref.key}"
        return f"inline ({len(self.inline or [])} lines)"


class Target(Camel):
    """A site a passing proxy must also reach."""

    url: Annotated[str, Field(pattern=URL_PATTERN)]
    """The http(s) URL fetched through the proxy."""
    expect_status: Annotated[int, Field(ge=100, le=599)] = 200
    """The HTTP status it must answer with."""


class Checker(Camel):
    """How each candidate is checked, in the worker pods."""

    engine: Engine = Engine.NATIVE
    """native (built in) or mubeng (only in an image built with it)."""
    timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 10
    """Seconds one check may take in all: connect, request, answer."""
    connect_timeout_seconds: Annotated[float | None, Field(gt=0, le=300)] = None
    """Seconds to connect to the proxy; at most timeoutSeconds (default: it)."""
    concurrency: Annotated[int, Field(ge=1, le=4096)] = 256
    """Checks in flight at once in each pod."""
    judges: Annotated[list[Annotated[str, Field(pattern=URL_PATTERN)]], Field(min_length=1)]
    """URLs of judges (proxyrefresh judge): each echoes what reached it, and
    the anonymity is judged from that. Asked in turn; a pod exits at once
    if none answers."""
    targets: list[Target] = Field(default_factory=list)
    """Sites a passing proxy must also reach, with the status expected."""


class Filter(Camel):
    """Which live proxies count as usable."""

    min_anonymity: Anonymity = Anonymity.ANONYMOUS
    """The least anonymity a usable proxy has: transparent, anonymous or elite."""
    max_latency_ms: Annotated[float | None, Field(gt=0)] = None
    """The slowest a usable proxy may be, in milliseconds (default: any)."""


class Retry(Camel):
    """How the Job retries a chunk whose pod failed."""

    backoff_limit_per_index: Annotated[int, Field(ge=0, le=20)] = 2
    """Retries of each chunk (the Job's backoffLimitPerIndex)."""
    max_failed_indexes: Annotated[int | None, Field(ge=0, le=100_000)] = None
    """Chunks that may fail before the whole Job fails (the Job's
    maxFailedIndexes, clamped to the number of chunks). Default: no limit."""


class Deadlines(Camel):
    """How long the parts of a refresh may take."""

    chunk_seconds: Annotated[int, Field(ge=10, le=86_400)] = 900
    """Seconds one chunk may take. A pod stops itself at 85% of it, keeping
    what it checked. The pod's activeDeadlineSeconds is this, or twice this
    when the Job starts pods ahead (readyPods), since such a pod may first
    wait as long for a free slot."""


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
    """The ConfigMap written (default: POOL-proxies), with live_proxies.json
    and live_proxies.txt."""
    credentials: CredentialsExport = CredentialsExport.OMIT
    """Omit: proxies with credentials only with their password masked;
    Include: whole (anyone who may read the ConfigMap sees them)."""
    max_bytes: Annotated[int, Field(ge=4096, le=1_000_000)] = 900_000
    """The export's size bound: the best entries that fit."""


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
    """Where the candidates come from (duplicates across sources are dropped)."""
    chunk_size: ChunkSize = "auto"
    """A number from 1 to 10000, or the word auto (kubectl explain calls this
    int-or-string an Object): candidates per chunk, one pod checking one
    chunk. auto: one wave of pods in whole rounds of their concurrency,
    within the deadline. The size used is status.chunkSize."""
    parallelism: Annotated[int, Field(ge=1, le=1000)] = 10
    """Chunks checked at once. The Job's own parallelism is this plus
    readyPods (when more chunks wait than run): those pods start ahead and
    wait for one of these slots, so only this many check at a time."""
    ready_pods: Annotated[int | None, Field(ge=0, le=1000)] = None
    """Pods started ahead while more chunks wait than run: each gets ready
    and takes the next free slot the moment a chunk ends, so a wave of pods
    costs no start-up time. They hold their resource requests while they
    wait. Unset: as many as parallelism; 0: none (the Job's parallelism is
    then exactly parallelism)."""
    checker: Checker
    """How each candidate is checked."""
    filter: Filter = Field(default_factory=Filter)
    """Which live proxies are usable."""
    retry: Retry = Field(default_factory=Retry)
    """How failed chunks are retried."""
    deadlines: Deadlines = Field(default_factory=Deadlines)
    """How long chunks may take."""
    min_usable: Annotated[int, Field(ge=0, le=1_000_000)] = 5
    """Fewer usable proxies than this after the merge sets condition Degraded."""
    concurrency_policy: ConcurrencyPolicy = ConcurrencyPolicy.FORBID
    """What to do when another refresh of the same pool is running, as a
    CronJob's: Forbid (wait for it), Allow (run both) or Replace (fail it)."""
    output: Output = Field(default_factory=Output)
    """The ConfigMap export of the pool."""


class ProxyRefreshSpec(RefreshTemplate):
    """One refresh: scrape the sources, check every candidate in an Indexed
    Job, merge what lives into the pool."""

    pool: PoolName = "default"
    """The pool (in this namespace) the results merge into."""

    @property
    def output_config_map(self) -> str:
        return self.output.config_map or f"{self.pool}-proxies"


class Scoring(Camel):
    """How consumer reports and refreshes move a proxy's score (seed 002)."""

    success: Annotated[float, Field(ge=1, le=10)] = 1.1
    """A success multiplies the score by this."""
    failure: Annotated[float, Field(gt=0, le=1)] = 0.5
    """A failure multiplies the score by this."""
    max_failures: Annotated[int, Field(ge=1, le=100)] = 3
    """Failures in a row that drop a proxy from the pool."""
    min_score: Annotated[float, Field(ge=0, le=1)] = 0.01
    """A score below this drops the proxy."""
    max_score: Annotated[float, Field(ge=1, le=1e12)] = 10.0
    """The highest score a proxy can reach."""


class PoolAccess(Camel):
    """A Redis user for the pool's consumers (a rotator, a scraper), kept
    by the operator: it may use this pool and nothing else, and it is made
    again whenever Redis forgot it (a restart without an ACL file)."""

    secret_name: ObjectName
    """The Secret in the pool's namespace the operator writes the user's
    Redis URL into (key ``url``), once: it goes with the pool."""


class ProxyPoolSpec(Camel):
    """The long-lived pool refreshes merge into, as a Deployment is to its
    ReplicaSets: the refresh to start from, when to start one by itself,
    how it scores, how long an unconfirmed proxy stays."""

    template: RefreshTemplate
    """The refresh it starts (refills, proxyrefresh create --pool): a
    ProxyRefresh's spec without its pool."""
    min_usable: Annotated[int, Field(ge=0, le=1_000_000)] = 0
    """Fewer usable proxies than this starts a refresh from the template
    (condition BelowMinimum); 0: never refill."""
    refill_cooldown_seconds: Annotated[int, Field(ge=1, le=86_400)] = 300
    """Seconds between the end of one refill and the start of the next."""
    scoring: Scoring = Field(default_factory=Scoring)
    """How consumer reports and refreshes move a proxy's score."""
    max_age_seconds: Annotated[int | None, Field(ge=60, le=90 * 86_400)] = None
    """Seconds an entry stays without a success before it is dropped
    (default: kept until it fails)."""
    output: Output | None = None
    """The export of the pool; default: the template's."""
    access: PoolAccess | None = None
    """A least-privilege Redis user for the pool's consumers, kept by the
    operator (none: consumers need one from ``proxyrefresh pool grant``)."""

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
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # how a status writes them: RFC 3339, UTC, seconds


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
    pool_usable: int | None = None  # the pool's usable entries after the merge
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
