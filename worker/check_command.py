"""``proxyrefresh check``: the whole job on one machine, no cluster.

Read a list, parse it, learn our real IP from the judges, check every
candidate concurrently and write the ones that pass. The progress bar goes
to a terminal only; the summary always goes to stderr so stdout stays
machine-readable.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from proxyrefresh.models import Anonymity, ProxyResult, Tally
from proxyrefresh.parse import InputTooLarge, ParseReport, check_size, parse_text
from proxyrefresh.settings import CheckerSettings
from proxyrefresh.worker.native import CheckOptions, NativeChecker, NoJudgeAvailable, require_judges

EXIT_OK, EXIT_BAD_INPUT, EXIT_NO_JUDGE = 0, 2, 3
SHOWN_ERRORS = 10


@dataclass(frozen=True)
class CheckRequest:
    source: str  # a path or "-"
    settings: CheckerSettings
    output_format: str = "json"
    include_dead: bool = False
    output: Path | None = None


def read_source(source: str, max_bytes: int) -> str:
    """The list's text, refusing one over the cap without reading it all."""
    if source == "-":
        data = sys.stdin.buffer.read(max_bytes + 1)
    else:
        path = Path(source)
        check_size(path.stat().st_size, max_bytes)
        data = path.read_bytes()
    check_size(len(data), max_bytes)
    return data.decode("utf-8", errors="replace")


def format_result(result: ProxyResult, output_format: str) -> str:
    if output_format == "txt":
        return result.proxy
    return result.model_dump_json(exclude_none=True)


def summary_lines(report: ParseReport, tally: Tally, seconds: float) -> list[str]:
    levels = ", ".join(f"{lvl} {tally.anonymity.get(lvl, 0)}" for lvl in Anonymity)
    lines = [
        f"checked {tally.checked}, live {tally.live}, passed {tally.passed} in {seconds:.1f}s",
        f"anonymity: {levels}",
        f"input: {report.lines} lines, {len(report.candidates)} candidates, "
        f"{report.duplicates} duplicates, {report.error_count} errors, "
        f"{report.ignored_lines} lines without a proxy",
    ]
    if tally.failures:
        top = ", ".join(f"{why} {n}" for why, n in tally.failures.most_common(4))
        lines.append(f"dead: {top}")
    return lines


class PlainErr:
    """stderr when it is not a terminal: plain lines (and no rich to import,
    which is a fair share of a short check's start-up)."""

    is_terminal = False

    def print(self, text: str, markup: bool = True) -> None:
        print(text, file=sys.stderr)


def stderr_console() -> Any:
    if not sys.stderr.isatty():
        return PlainErr()
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


@contextlib.contextmanager
def progress_bar(err: Any, total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar on a terminal; nothing (and no rich) elsewhere. Yields
    ``advance(live)``."""
    if not err.is_terminal:
        yield lambda live: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("checking"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("live {task.fields[live]}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )
    with progress:
        task = progress.add_task("check", total=total, live=0)
        yield lambda live: progress.update(task, advance=1, live=live)


async def run_check(request: CheckRequest) -> int:
    err = stderr_console()
    settings = request.settings
    if not settings.judges:
        err.print(
            "proxyrefresh: no judge configured: give --judge URL (or PROXYREFRESH_JUDGES)",
            markup=False,
        )
        return EXIT_BAD_INPUT
    try:
        text = read_source(request.source, settings.max_input_bytes)
    except (OSError, InputTooLarge) as exc:
        err.print(f"proxyrefresh: cannot read {request.source}: {exc}")
        return EXIT_BAD_INPUT
    report = parse_text(text, settings.default_protocol, settings.max_input_bytes)
    for error in report.errors[:SHOWN_ERRORS]:
        err.print(f"proxyrefresh: {request.source}: {error}", markup=False)
    if report.error_count > SHOWN_ERRORS:
        err.print(f"proxyrefresh: ... and {report.error_count - SHOWN_ERRORS} more bad lines")
    if not report.candidates:
        err.print(
            f"proxyrefresh: no candidate proxies in {request.source} "
            f"({report.lines} lines, {report.error_count} errors)"
        )
        return EXIT_BAD_INPUT
    try:
        judges = await require_judges(settings.judges, settings.timeout)
    except NoJudgeAvailable as exc:
        err.print(f"proxyrefresh: {exc}", markup=False)
        return EXIT_NO_JUDGE
    checker = NativeChecker(CheckOptions.from_settings(settings), judges)
    started = time.monotonic()
    tally = Tally()
    out: IO[str] = request.output.open("w") if request.output else sys.stdout
    try:
        with progress_bar(err, len(report.candidates)) as advance:
            # The candidates as they are, not a list made first: each is made
            # from its URL as a check takes it, while others wait on the wire.
            async for _, result in checker.check_stream(report.candidates):
                passed = result.passes(settings.min_anonymity, settings.max_latency_ms)
                tally.add(result, passed)
                if passed or (request.include_dead and request.output_format == "json"):
                    out.write(format_result(result, request.output_format) + "\n")
                advance(tally.live)
    finally:
        out.flush()
        if request.output:
            out.close()
    for line in summary_lines(report, tally, time.monotonic() - started):
        err.print(line, markup=False)
    return EXIT_OK
