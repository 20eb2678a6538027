"""The one entry point, ``proxyrefresh``: check, judge, worker, operator
(and create).

Exit codes (documented in the README):
  0  the command ran (a check that found nothing live still ran);
  2  bad input or usage: unreadable or oversized list, no candidates, bad flags;
  3  no judge answered, so nothing could be judged.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast

import typer
from pydantic import ValidationError
from typer.core import MarkupMode

from proxyrefresh import __version__
from proxyrefresh.constants import EXPORT_TXT_KEY, LABEL_POOL, RUNS
from proxyrefresh.front.output import SCORE_DIGITS, Format, document, entry_view, rounded, table
from proxyrefresh.models import Anonymity, Protocol, TargetSpec
from proxyrefresh.settings import CheckerSettings, EnvSettings

if TYPE_CHECKING:
    from proxyrefresh.api import ProxyRefreshSpec
    from proxyrefresh.settings import RedisSettings
    from proxyrefresh.worker.rotate_settings import RotatorSettings

S = TypeVar("S", bound=EnvSettings)

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_NO_JUDGE = 3

# -h as well as --help, as kubectl and most CLIs take it.
HELP = {"help_option_names": ["-h", "--help"]}
# Boxes and colours for a terminal; plain text for a pipe, a log or a CI
# job, where box-drawing characters only get in the way of grep.
MARKUP: MarkupMode = "rich" if sys.stdout.isatty() and sys.stderr.isatty() else None
app = typer.Typer(
    name="proxyrefresh",
    help="Keep a pool of working HTTP/SOCKS proxies fresh.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings=HELP,
    rich_markup_mode=MARKUP,
)


def show_version(wanted: bool) -> None:
    if wanted:
        typer.echo(f"proxyrefresh {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Keep a pool of working HTTP/SOCKS proxies fresh."""


Namespace = Annotated[
    str | None,
    typer.Option(
        "--namespace",
        "-n",
        help="Default: the current kubeconfig context's namespace (as kubectl), else default.",
    ),
]


def in_namespace(namespace: str | None) -> str:
    """``-n`` if given, else the namespace kubectl would act in."""
    from proxyrefresh.kubeconfig import default_namespace

    return namespace or default_namespace()


def fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"proxyrefresh: {message}", err=True)
    return typer.Exit(code)


def api_failure(exc: Exception, what: str) -> typer.Exit:
    """A failed API call as the CLI reports it, the cause named: exit 69 when
    the API server is away, 2 when it rejects the input, 1 otherwise (a
    refusal: the message names the permission)."""
    from kubernetes.client.rest import ApiException

    from proxyrefresh.front.client import explain, transient

    code = 1
    if transient(exc):
        code = EXIT_UNAVAILABLE
    elif isinstance(exc, ApiException) and exc.status in (400, 422):
        code = EXIT_BAD_INPUT
    return fail(f"{what}: {explain(exc)}", code)


# Which flag sets which CheckerSettings field, so an error names what the user typed.
FLAGS = {
    "judges": "--judge",
    "timeout": "--timeout",
    "connect_timeout": "--connect-timeout",
    "concurrency": "--concurrency",
    "min_anonymity": "--min-anonymity",
    "max_latency_ms": "--max-latency-ms",
    "default_protocol": "--protocol",
    "targets": "--target",
    "max_input_bytes": "--max-bytes",
    "protocol": "--protocol",
    "retries": "--retries",
    "answer_timeout": "--answer-timeout",
}


def option_error(exc: ValidationError, env_prefix: str = "PROXYREFRESH_") -> str:
    """One line per bad option, naming it and the rule: pydantic's own report
    (with its link to pydantic's website) is for developers, not users."""
    parts = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        flag = FLAGS.get(field, field)
        env = f"{env_prefix}{field.upper()}"
        rule = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{flag} (or {env}): {rule[:1].lower()}{rule[1:]}")
    return "; ".join(parts)


def parse_target(text: str) -> TargetSpec:
    """``URL`` or ``URL=STATUS``."""
    url, sep, status = text.rpartition("=")
    if sep and status.isascii() and status.isdecimal() and "://" in url:
        return TargetSpec(url=url, expect_status=int(status))
    return TargetSpec(url=text)


@app.command()
def check(
    file: Annotated[str, typer.Argument(help="Candidate list (any text), or - for stdin.")],
    judge: Annotated[
        list[str] | None,
        typer.Option("--judge", "-j", help="Judge URL (repeatable); env PROXYREFRESH_JUDGES."),
    ] = None,
    timeout: Annotated[float | None, typer.Option(help="Total seconds per check.")] = None,
    connect_timeout: Annotated[
        float | None, typer.Option(help="Seconds to connect to a proxy (default: --timeout).")
    ] = None,
    concurrency: Annotated[int | None, typer.Option(help="Checks in flight at once.")] = None,
    min_anonymity: Annotated[
        Anonymity | None, typer.Option(help="Least anonymity a proxy must have to pass.")
    ] = None,
    max_latency_ms: Annotated[float | None, typer.Option(help="Slowest proxy that passes.")] = None,
    protocol: Annotated[
        Protocol | None, typer.Option(help="Protocol of bare host:port lines.")
    ] = None,
    target: Annotated[
        list[str] | None,
        typer.Option(help="URL[=STATUS] a passing proxy must reach (repeatable)."),
    ] = None,
    output_format: Annotated[
        str,
        typer.Option("--format", "-o", help="json: JSON lines; txt: scheme://host:port lines."),
    ] = "json",
    include_dead: Annotated[
        bool, typer.Option("--all", help="With --format json, also print proxies that fail.")
    ] = False,
    output: Annotated[
        Path | None, typer.Option("--output-file", help="Write results here, not stdout.")
    ] = None,
    max_bytes: Annotated[int | None, typer.Option(help="Refuse lists larger than this.")] = None,
) -> None:
    """Check a list of proxies on this machine: live ones out, with anonymity,
    exit IP and latency."""
    from proxyrefresh.worker.check_command import CheckRequest, run_check

    if output_format not in ("json", "txt"):
        raise fail(f"-o/--format must be json or txt, not {output_format!r}", EXIT_BAD_INPUT)
    settings = checker_settings(
        judges=judge or None,
        timeout=timeout,
        connect_timeout=connect_timeout,
        concurrency=concurrency,
        min_anonymity=min_anonymity,
        max_latency_ms=max_latency_ms,
        default_protocol=protocol,
        targets=target,
        max_input_bytes=max_bytes,
    )
    request = CheckRequest(file, settings, output_format, include_dead, output)
    from proxyrefresh.fanout import aio

    raise typer.Exit(aio.run(run_check(request)))


def checker_settings(targets: list[str] | None, **options: Any) -> CheckerSettings:
    """The environment's checker settings with the command line's over them."""
    try:
        parsed = [parse_target(t) for t in targets] if targets else None
    except ValidationError as exc:
        raise fail(option_error(exc), EXIT_BAD_INPUT) from None
    return overlaid(CheckerSettings, targets=parsed, **options)


def from_env(kind: type[S]) -> S:
    """``kind`` from the environment; exit 2 naming each bad variable."""
    try:
        return kind.from_env()
    except ValidationError as exc:
        raise fail(kind.explain(exc), EXIT_BAD_INPUT) from None


def redis_from_env() -> RedisSettings:
    """$PROXYREFRESH_REDIS_*; exit 2 naming each bad variable."""
    from proxyrefresh.settings import RedisSettings

    return from_env(RedisSettings)


def overlaid(kind: type[S], **options: Any) -> S:
    """``kind`` from the environment with the command line's options over
    it; exit 2 naming each bad option and its variable."""
    try:
        return kind.from_env().overlay(**options)
    except ValidationError as exc:
        raise fail(option_error(exc, kind.env_prefix), EXIT_BAD_INPUT) from None


@app.command()
def judge(
    listen: Annotated[
        str, typer.Option(help="HOST:PORT to listen on (0.0.0.0:PORT: every interface).")
    ] = "127.0.0.1:8080",
) -> None:
    """Serve a judge: echoes the caller's address, headers and token as JSON."""
    from proxyrefresh.worker.judge import serve, split_listen

    try:
        split_listen(listen)
    except ValueError as exc:
        raise fail(str(exc), EXIT_BAD_INPUT) from None
    from proxyrefresh.fanout import aio

    typer.echo(f"proxyrefresh judge listening on {listen}", err=True)
    aio.run(serve(listen))


@app.command()
def worker() -> None:
    """Run one Indexed Job pod: check chunk $JOB_COMPLETION_INDEX of the run
    $PROXYREFRESH_RUN_ID (exit codes: see the README)."""
    from proxyrefresh.worker.pod import main as pod_main

    raise typer.Exit(pod_main())


@app.command()
def operator() -> None:
    """Run the kopf operator (one replica; liveness on
    $PROXYREFRESH_OPERATOR_LIVENESS_ENDPOINT)."""
    import socket

    # kopf imports the kubernetes client for helpers of its own whenever it
    # can (19 MiB at rest); the operator calls the API without it
    # (operator/apiclient.py), so in this process it is never imported.
    sys.modules.setdefault("kubernetes", None)  # type: ignore[arg-type]
    import kopf

    from proxyrefresh.operator import handlers  # noqa: F401 - registers the handlers
    from proxyrefresh.operator.apiclient import can_log_in
    from proxyrefresh.operator.settings import OperatorSettings
    from proxyrefresh.settings import NetworkSettings, RedisSettings

    # What the operator reads, read now: a bad variable is one line naming
    # it and exit 2, not a traceback from inside kopf's start-up.
    settings = from_env(OperatorSettings)
    from_env(RedisSettings)
    from_env(NetworkSettings)
    can_log_in()  # no API server to talk to: one line and exit 2, not kopf's retries
    # kopf's own text format cuts logger names to 20 characters; its
    # formatter takes a format string as well as a LogFormat.
    text = cast(kopf.LogFormat, "[%(asctime)s] %(name)s [%(levelname)s] %(message)s")
    json_lines = settings.log_format == "json"
    kopf.configure(
        verbose=False,
        log_format=kopf.LogFormat.JSON if json_lines else text,
        log_prefix=not json_lines,
    )
    # kopf names itself after $POD_ID (the chart sets the pod's name), else
    # user@host; the user of a container's UID may not exist (no passwd entry
    # under an arbitrary UID: getpwuid fails and the operator dies at start).
    os.environ.setdefault("POD_ID", socket.gethostname())
    kopf.run(
        standalone=True,  # one replica, no peering objects needed
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=settings.liveness_endpoint or None,
    )


@app.command()
def create(
    spec_file: Annotated[
        Path | None, typer.Argument(help="YAML/JSON: a ProxyRefresh, or just its spec.")
    ] = None,
    spec_env: Annotated[
        str | None, typer.Option(help="Read the spec (JSON/YAML) from this variable instead.")
    ] = None,
    pool: Annotated[
        str | None, typer.Option(help="Make it from this ProxyPool's template instead.")
    ] = None,
    namespace: Namespace = None,
    name: Annotated[
        str | None, typer.Option(help="Name; default: generateName from the pool.")
    ] = None,
    wait: Annotated[
        bool, typer.Option(help="Block until Complete (exit 1 if Failed, 75 at --timeout).")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds --wait may take.")] = 1800,
) -> None:
    """Create a ProxyRefresh (what the scheduling CronJobs run)."""
    from proxyrefresh.api import ProxyRefreshSpec
    from proxyrefresh.front.client import API_ERRORS, create_refresh

    if sum(x is not None for x in (spec_file, spec_env, pool)) != 1:
        raise fail("give one of: a spec file, --spec-env, --pool", EXIT_BAD_INPUT)
    namespace = in_namespace(namespace)
    spec: Any
    if pool is not None:
        spec = pool_refresh_spec(namespace, pool)
        parsed = ProxyRefreshSpec.model_validate(spec)
    else:
        spec, parsed = read_refresh_spec(spec_file, spec_env or "")
    metadata: dict[str, Any] = {"name": name} if name else {"generateName": f"{parsed.pool}-"}
    metadata["labels"] = {LABEL_POOL: parsed.pool}
    try:
        created = create_refresh(namespace, {"metadata": metadata, "spec": spec})
    except API_ERRORS as exc:
        raise api_failure(exc, f"creating a ProxyRefresh in {namespace}") from None
    created_name = created["metadata"]["name"]
    typer.echo(f"proxyrefresh.proxyrefresh.dev/{created_name} created")
    if wait:
        wait_and_say(created_name, namespace, timeout)


def read_refresh_spec(spec_file: Path | None, spec_env: str) -> tuple[Any, ProxyRefreshSpec]:
    """The spec in a file or a variable (a whole ProxyRefresh or just its
    spec), as written and as parsed; exit 2 naming what is wrong."""
    import yaml
    from pydantic import ValidationError as SpecError

    from proxyrefresh import redact
    from proxyrefresh.api import ProxyRefreshSpec, problems

    origin = str(spec_file) if spec_file else f"${spec_env}"
    try:
        text = spec_file.read_text() if spec_file else os.environ[spec_env]
        doc = yaml.safe_load(text)
        spec = doc.get("spec", doc) if isinstance(doc, dict) else None
        return spec, ProxyRefreshSpec.model_validate(spec)
    except SpecError as exc:
        raise fail(f"{origin}: {problems(exc)}", EXIT_BAD_INPUT) from None
    except OSError as exc:
        raise fail(f"{origin}: {exc.strerror or exc}", EXIT_BAD_INPUT) from None
    except KeyError:
        raise fail(f"{origin}: the variable is not set", EXIT_BAD_INPUT) from None
    except (yaml.YAMLError, AttributeError) as exc:
        raise fail(
            f"{origin}: not YAML or JSON: {redact.one_line(str(exc))}", EXIT_BAD_INPUT
        ) from None


def wait_and_say(name: str, namespace: str, timeout: float) -> None:
    """--wait: block until the refresh ends; exit 1 if it failed, 75 at the timeout."""
    from proxyrefresh.front.client import API_ERRORS, RefreshFailed, wait_for_refresh

    try:
        status = wait_for_refresh(name, namespace, timeout)
    except RefreshFailed as exc:
        raise fail(str(exc), 1) from None
    except TimeoutError as exc:
        raise fail(str(exc), EXIT_TIMED_OUT) from None
    except API_ERRORS as exc:
        raise api_failure(exc, f"waiting for {namespace}/{name}") from None
    typer.echo(f"{name}: {status.get('message')}")


def pool_refresh_spec(namespace: str, pool: str) -> dict[str, Any]:
    """A refresh spec from the ProxyPool's template (exit 4 if there is none)."""
    from pydantic import ValidationError as SpecError

    from proxyrefresh.api import ProxyPoolSpec, dump, problems
    from proxyrefresh.front.client import API_ERRORS, read_pool

    try:
        found = read_pool(namespace, pool)
    except API_ERRORS as exc:
        raise api_failure(exc, f"reading ProxyPool {namespace}/{pool}") from None
    if found is None:
        raise fail(f"ProxyPool {namespace}/{pool} not found", EXIT_NOT_FOUND)
    try:
        return dump(ProxyPoolSpec.model_validate(found.get("spec") or {}).refresh_spec(pool))
    except SpecError as exc:
        raise fail(f"ProxyPool {namespace}/{pool}: {problems(exc)}", EXIT_BAD_INPUT) from None


@app.command("rotator-feed")
def rotator_feed(
    configmap: Annotated[str, typer.Option(help="The pool's output ConfigMap.")],
    file: Annotated[Path, typer.Option(help="The file mubeng reads with -f and -w.")],
    namespace: Namespace = None,
    key: Annotated[str, typer.Option(help="ConfigMap key.")] = EXPORT_TXT_KEY,
) -> None:
    """Keep a mubeng rotator's file in step with a pool, written in place and
    never empty."""
    import logging

    from proxyrefresh.worker.rotator_feed import feed

    namespace = in_namespace(namespace)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    feed(namespace, configmap, key, file)


RotatorWorkers = Annotated[
    int | None,
    typer.Option(
        help="Acceptor processes on the port, one core each; sessions hold across them (default 1)."
    ),
]
WaitForPool = Annotated[
    bool,
    typer.Option(
        help="Start even if Redis has no such pool yet, answering 503 until a refresh "
        "makes it (instead of exit 4): for a rotator deployed before its pool."
    ),
]


@app.command()
def rotate(
    pool: Annotated[str, typer.Option(help="The pool to rotate through.")],
    namespace: Namespace = None,
    listen: Annotated[
        str,
        typer.Option(help="HOST:PORT of the proxy (0.0.0.0:PORT: every interface, an open proxy)."),
    ] = "127.0.0.1:8089",
    api_listen: Annotated[
        str | None, typer.Option(help="HOST:PORT of the JSON API (none: no API).")
    ] = None,
    protocol: Annotated[
        Protocol | None, typer.Option(help="Only upstreams of this protocol.")
    ] = None,
    min_anonymity: Annotated[
        Anonymity | None, typer.Option(help="Only this level or better.")
    ] = None,
    max_latency_ms: Annotated[float | None, typer.Option(help="Only upstreams this fast.")] = None,
    retries: Annotated[
        int | None, typer.Option(help="Other upstreams to try after one fails (default 2).")
    ] = None,
    connect_timeout: Annotated[float | None, typer.Option(help="Seconds (default 5).")] = None,
    answer_timeout: Annotated[
        float | None, typer.Option(help="Seconds for an upstream's answer (default 30).")
    ] = None,
    workers: RotatorWorkers = None,
    wait_for_pool: WaitForPool = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", "-v", help="Log every request: client, target, status, upstream, time."
        ),
    ] = False,
) -> None:
    """A rotating forward proxy over a pool (Redis: $PROXYREFRESH_REDIS_URL):
    each request leaves through the next proxy, every outcome is reported."""
    from proxyrefresh.worker.rotate_settings import RotatorSettings

    namespace = in_namespace(namespace)
    addresses = listen_addresses(listen, api_listen)
    settings = overlaid(
        RotatorSettings,
        protocol=protocol,
        min_anonymity=min_anonymity,
        max_latency_ms=max_latency_ms,
        retries=retries,
        connect_timeout=connect_timeout,
        answer_timeout=answer_timeout,
        workers=workers,
    )
    if not wait_for_pool:
        with _pool_errors():
            _pool(pool, namespace)  # exit 4 naming the pool: most often a typo
    where = f"{listen}" + (f", API on {api_listen}" if api_listen else "")
    serve_rotator(pool, namespace, settings, addresses, where, verbose)


def listen_addresses(
    listen: str, api_listen: str | None
) -> tuple[tuple[str, int], tuple[str, int] | None]:
    """The proxy's and the API's (host, port); exit 2 on one that is not."""
    from proxyrefresh.worker.judge import split_listen

    try:
        return split_listen(listen), split_listen(api_listen) if api_listen else None
    except ValueError as exc:
        raise fail(str(exc), EXIT_BAD_INPUT) from None


def serve_rotator(
    pool: str,
    namespace: str,
    settings: RotatorSettings,
    addresses: tuple[tuple[str, int], tuple[str, int] | None],
    where: str,
    verbose: bool,
) -> None:
    """Run the rotator until stopped; exit 2 if it cannot listen."""
    import logging

    from proxyrefresh.fanout import aio
    from proxyrefresh.worker.acceptors import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    access = logging.INFO if verbose else logging.WARNING
    logging.getLogger("proxyrefresh.rotate.access").setLevel(access)

    def ready() -> None:
        typer.echo(f"proxyrefresh rotate: pool {namespace}/{pool} on {where}", err=True)

    redis = redis_from_env()  # a bad variable: one line naming it, before anything starts
    try:
        aio.run(serve(pool, namespace, settings, *addresses, ready=ready, redis_settings=redis))
    except OSError as exc:
        raise fail(f"cannot listen: {exc.strerror or exc}", EXIT_BAD_INPUT) from None


@app.command()
def watch(
    name: str,
    namespace: Namespace = None,
    timeout: Annotated[float | None, typer.Option(help="Give up after this many seconds.")] = None,
) -> None:
    """Follow one refresh until it ends: a bar on a terminal, lines when piped.
    Progress from its Redis events when $PROXYREFRESH_REDIS_URL is set, else
    from its status. Exit 0 Complete, 1 Failed (the reason on stderr), 4 not
    found, 69 the API server unavailable, 75 still running at --timeout."""
    import time

    from kubernetes import client
    from kubernetes.client.rest import ApiException

    from proxyrefresh import constants as c
    from proxyrefresh.front import watch as w
    from proxyrefresh.front.client import API_ERRORS
    from proxyrefresh.kubeconfig import load

    namespace = in_namespace(namespace)
    load()
    api = client.CustomObjectsApi()
    deadline = None if timeout is None else time.monotonic() + timeout
    last: dict[str, Any] = {}

    def read() -> dict[str, Any]:
        """The refresh (exits as documented when it cannot be read)."""
        try:
            obj = api.get_namespaced_custom_object(c.GROUP, c.VERSION, namespace, c.PLURAL, name)
        except API_ERRORS as exc:
            if isinstance(exc, ApiException) and exc.status == 404:
                raise fail(f"ProxyRefresh {namespace}/{name} not found", EXIT_NOT_FOUND) from None
            raise api_failure(exc, f"reading {namespace}/{name}") from None
        if deadline is not None and time.monotonic() > deadline:
            raise fail(f"refresh {name} not done after {timeout:g}s", EXIT_TIMED_OUT)
        return dict(obj)

    def status() -> dict[str, Any]:
        nonlocal last
        last = dict(read().get("status") or {})
        return last

    uid = read()["metadata"]["uid"]
    # Events only where the user named a Redis (PROXYREFRESH_REDIS_URL), not
    # the default URL: else the status alone.
    redis = redis_from_env()
    named = redis if "url" in redis.model_fields_set else None
    events = w.Events(named, RUNS.keys(uid).events)
    view = w.follow(name, status, events, w.Output(name, sys.stdout, bar=sys.stdout.isatty()))
    if view.phase != "Complete":
        raise fail(f"refresh {name} failed: {w.failure(last)}", 1)


@app.command()
def ui(
    listen: Annotated[
        str, typer.Option(help="HOST:PORT of the page (0.0.0.0:PORT: every interface).")
    ] = "127.0.0.1:8088",
    namespace: Annotated[
        list[str] | None, typer.Option("--namespace", "-n", help="Namespaces shown (repeat).")
    ] = None,
) -> None:
    """Serve one live page of the refreshes and pools of some namespaces
    (Redis: $PROXYREFRESH_REDIS_URL; the API server: the kubeconfig or the
    pod's account, which needs list on proxyrefreshes and proxypools)."""
    from proxyrefresh.worker.judge import split_listen

    try:
        host, port = split_listen(listen)
    except ValueError as exc:
        raise fail(str(exc), EXIT_BAD_INPUT) from None
    from aiohttp import web

    from proxyrefresh.fanout import aio
    from proxyrefresh.front.ui import Board, kube_lister, make_app

    async def main() -> None:
        redis = redis_from_env().client(retries=1, timeout=5.0)
        board = Board(redis, namespace or [in_namespace(None)], *kube_lister())
        runner = web.AppRunner(make_app(board), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port, reuse_address=True).start()
        typer.echo(f"proxyrefresh ui on http://{listen}/", err=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()
            await redis.aclose()

    import asyncio
    import contextlib

    with contextlib.suppress(KeyboardInterrupt):
        aio.run(main())


pool_app = typer.Typer(
    help="Read and feed a pool in Redis ($PROXYREFRESH_REDIS_URL). Exit codes: 0 done, "
    "2 bad usage, 4 not found (pool, proxy, or no proxy matches), 69 Redis unavailable.",
    no_args_is_help=True,
    context_settings=HELP,
)
app.add_typer(pool_app, name="pool")
EXIT_NOT_FOUND = 4
EXIT_UNAVAILABLE = 69
# sysexits' EX_TEMPFAIL: the refresh is still going when --timeout ran out.
# Not 1, so a wrapper (a CronJob, a pipeline) can tell "not yet" from Failed.
EXIT_TIMED_OUT = 75
AsJson = Annotated[bool, typer.Option("--json", help="Same as -o json.")]
Output = Annotated[
    Format | None,
    typer.Option("--output", "-o", help="text, wide (more columns), json or yaml."),
]


def output_format(output: Format | None, as_json: bool) -> Format:
    """``-o``, with ``--json`` kept as its older spelling."""
    if output is not None and as_json and output is not Format.JSON:
        raise fail(f"--json and -o {output.value} say different things", EXIT_BAD_INPUT)
    return Format.JSON if as_json else (output or Format.TEXT)


def _pool(name: str, namespace: str, must_exist: bool = True) -> Any:
    """The pool, or exit 4 if Redis has never heard of it."""
    from proxyrefresh.pool import Pool

    pool = Pool(redis_from_env().sync_client(), name, namespace)
    if must_exist and not pool.exists():
        raise fail(f"pool {namespace}/{name} not found in Redis", EXIT_NOT_FOUND)
    return pool


def _pool_errors() -> Any:
    """Map what can go wrong talking to the pool onto the documented exits."""
    import contextlib

    from redis.exceptions import RedisError

    from proxyrefresh import redact
    from proxyrefresh.pool import NoMatch, NotInPool, PoolError

    @contextlib.contextmanager
    def mapped() -> Any:
        try:
            yield
        except (NotInPool, NoMatch) as exc:
            raise fail(str(exc), EXIT_NOT_FOUND) from None
        except PoolError as exc:
            raise fail(str(exc), EXIT_BAD_INPUT) from None
        except RedisError as exc:
            where = redact.url(redis_from_env().url)
            why = redact.connection_problem(exc)
            raise fail(f"Redis at {where} unavailable: {why}", EXIT_UNAVAILABLE) from None

    return mapped()


@pool_app.command("stats")
def pool_stats(
    name: str, namespace: Namespace = None, output: Output = None, as_json: AsJson = False
) -> None:
    """Size, usable, and counts by protocol and anonymity."""
    fmt = output_format(output, as_json)
    namespace = in_namespace(namespace)
    with _pool_errors():
        stats = _pool(name, namespace).stats().as_dict()
    if fmt in (Format.JSON, Format.YAML):
        typer.echo(document(stats, fmt))
        return
    typer.echo(f"pool {namespace}/{name}: {stats['size']} proxies, {stats['usable']} usable")
    for what in ("protocols", "anonymity"):
        typer.echo(f"  {what}: " + ", ".join(f"{k} {v}" for k, v in stats[what].items() if v))


@pool_app.command("list")
def pool_list(
    name: str,
    namespace: Namespace = None,
    output: Output = None,
    as_json: AsJson = False,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many, best first.")] = None,
) -> None:
    """Every proxy, best first: one scheme://host:port a line; -o wide: a
    table; -o json/yaml: one array; --json: one JSON object a line (JSON
    lines, for streaming into jq)."""
    import json

    fmt = output_format(output, as_json)
    namespace = in_namespace(namespace)
    with _pool_errors():
        entries = _pool(name, namespace).entries(limit)
    if fmt is Format.TEXT:
        for entry in entries:
            typer.echo(entry.proxy)
        return
    views = [entry_view(entry) for entry in entries]
    if as_json:
        for view in views:
            typer.echo(json.dumps(view))
    elif fmt is Format.WIDE:
        typer.echo(table(views))
    else:
        typer.echo(document(views, fmt))


@pool_app.command("get")
def pool_get(
    name: str,
    namespace: Namespace = None,
    protocol: Annotated[Protocol | None, typer.Option()] = None,
    min_anonymity: Annotated[Anonymity | None, typer.Option()] = None,
    max_latency_ms: Annotated[float | None, typer.Option(min=0)] = None,
    output: Output = None,
    as_json: AsJson = False,
) -> None:
    """One proxy that passes the filters (the next in turn); exit 4 if none."""
    fmt = output_format(output, as_json)
    namespace = in_namespace(namespace)
    with _pool_errors():
        entry = _pool(name, namespace).get(
            protocol=protocol, min_anonymity=min_anonymity, max_latency_ms=max_latency_ms
        )
    if fmt is Format.TEXT:
        typer.echo(entry.proxy)
    elif fmt is Format.WIDE:
        typer.echo(table([entry_view(entry)]))
    else:
        typer.echo(document(entry_view(entry), fmt))


@pool_app.command("report")
def pool_report(
    name: str,
    proxy: Annotated[
        str,
        typer.Argument(help="The proxy as the pool gave it, or a bare host:port (see --protocol)."),
    ],
    namespace: Namespace = None,
    ok: Annotated[bool | None, typer.Option("--ok/--fail", help="How the use went.")] = None,
    latency_ms: Annotated[float | None, typer.Option(min=0)] = None,
    protocol: Annotated[
        Protocol, typer.Option(help="Protocol of a bare host:port, as check reads one.")
    ] = Protocol.HTTP,
    output: Output = None,
    as_json: AsJson = False,
) -> None:
    """Report how using a proxy went: scores x1.1 on --ok, x0.5 on --fail;
    the third failure in a row drops it."""
    from proxyrefresh.parse import parse_lines

    fmt = output_format(output, as_json)
    namespace = in_namespace(namespace)
    if ok is None:
        raise fail("say --ok or --fail", EXIT_BAD_INPUT)
    if "://" not in proxy:
        # A bare host:port, as `check` and the lists read it.
        parsed = parse_lines([proxy], protocol).proxies
        if len(parsed) == 1:
            proxy = parsed[0].url
    with _pool_errors():
        report = _pool(name, namespace).report(proxy, ok, latency_ms)
    view = {**report.__dict__, "score": rounded(report.score, SCORE_DIGITS)}
    if fmt in (Format.JSON, Format.YAML):
        typer.echo(document(view, fmt))
    else:
        typer.echo(f"{report.outcome}: score {report.score:.3f}, failures {report.failures}")


@pool_app.command("grant")
def pool_grant(
    name: str,
    namespace: Namespace = None,
    user: Annotated[str, typer.Option(help="The Redis user to make (or reset).")] = "",
) -> None:
    """Make a Redis user that may use this pool and nothing else (its keys
    and events channel) and print its URL: the credential for a rotator or a
    consumer. Running it again resets the password."""
    import secrets

    from redis.exceptions import ResponseError

    from proxyrefresh.fanout.access import worker_url
    from proxyrefresh.pool_keys import PoolKeys, pool_rules
    from proxyrefresh.redis_topology import is_cluster_client

    if not user:
        raise fail("--user is required", EXIT_BAD_INPUT)
    namespace = in_namespace(namespace)
    settings = redis_from_env()
    secret = secrets.token_hex(24)
    with _pool_errors():
        try:
            redis = settings.sync_client()
            setuser = ["ACL", "SETUSER", user, *pool_rules(PoolKeys(namespace, name), secret)]
            if is_cluster_client(redis):  # each node keeps its own users
                redis.execute_command(*setuser, target_nodes="all")  # type: ignore[no-untyped-call]
            else:
                redis.execute_command(*setuser)  # type: ignore[no-untyped-call]
        except ResponseError as exc:
            raise fail(f"Redis refused ACL SETUSER: {exc}", EXIT_BAD_INPUT) from None
    typer.echo(worker_url(settings.url, user, secret))


def command_alone(name: str) -> typer.Typer | None:
    """An app holding only the top-level command ``name``, or None if it
    names none (a group such as ``pool``, an option, a typo): typer builds
    the click tree of every command and every option of an app it runs, and
    for this app that was 15 ms of the 0.2 s ``proxyrefresh check`` takes
    to start."""
    for info in app.registered_commands:
        callback = info.callback
        if (
            callback is not None
            and (info.name or typer.main.get_command_name(callback.__name__)) == name
        ):
            alone = typer.Typer(
                add_completion=False,
                pretty_exceptions_enable=False,
                context_settings=HELP,
                rich_markup_mode=MARKUP,
            )
            alone.registered_commands.append(info)
            return alone
    return None


def unwrap_help(*typers: typer.Typer) -> None:
    """Give every command its docstring, unwrapped, as its help."""
    from proxyrefresh.prose import unwrapped

    for group in typers:
        for info in group.registered_commands:
            if info.help is None and info.callback is not None and info.callback.__doc__:
                info.help = unwrapped(info.callback.__doc__)


unwrap_help(app, pool_app)


def main() -> None:
    """``proxyrefresh [COMMAND] ...``: one command's tree when the first
    argument names one, else the whole app (help, groups, usage errors)."""
    from proxyrefresh.kubeconfig import NoKubeconfig

    args = sys.argv[1:]
    alone = command_alone(args[0]) if args else None
    try:
        if alone is None:
            app(prog_name="proxyrefresh")
        else:
            typer.main.get_command(alone).main(args[1:], prog_name=f"proxyrefresh {args[0]}")
    except KeyboardInterrupt:
        sys.exit(130)
    except NoKubeconfig as exc:
        typer.echo(f"proxyrefresh: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)


if __name__ == "__main__":
    main()
