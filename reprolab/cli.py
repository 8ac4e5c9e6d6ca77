"""The ``reprolab`` command: check claims, list them, report, show a claim's history, merge checkpoints."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

if TYPE_CHECKING:
    from reprolab.claims.loader import LoadedClaim
    from reprolab.claims.session import ClaimSession

# The claims machinery (pydantic schemas, the history store, the runner: ~0.3 s to import) is imported inside the
# commands that use it, so `reprolab merge` starts without it.

# Logs (CI) get a wide ledger; a terminal keeps its own width.
console = Console(stderr=False, width=None if sys.stdout.isatty() else 180)
err = Console(stderr=True)


def _session(**options: object) -> ClaimSession:
    """The session of the project around the cwd (its ``[tool.reprolab]``, or the defaults)."""
    from reprolab.claims.project import ProjectConfigError, find_project
    from reprolab.claims.session import ClaimSession

    try:
        return ClaimSession(find_project(), **options)  # type: ignore[arg-type]
    except ProjectConfigError as exc:
        raise click.UsageError(str(exc)) from None


def _select(
    session: ClaimSession, paths: tuple[str, ...], marker: str | None, keyword: str | None
) -> tuple[list[LoadedClaim], int]:
    """Load and filter claims; print load errors (they never stop the others). Returns (claims, n_errors)."""
    try:
        selection = session.select([Path(p) for p in paths], marker=marker, keyword=keyword)
    except FileNotFoundError as exc:
        raise click.UsageError(str(exc)) from None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="-m") from None
    for error in selection.errors:
        err.print(f"[bold red]claim file error[/] {escape(str(error))}", highlight=False, soft_wrap=True)
    return selection.claims, len(selection.errors)


@contextmanager
def _history_errors(history: Any = None) -> Iterator[None]:
    """A history that cannot be used (a lock held too long, a file that cannot be opened) is one line; a damaged
    one that ``history`` moved aside (and started afresh) is said on stderr, before any error that follows."""
    from reprolab.claims.history import HistoryUnavailable

    try:
        yield
    except HistoryUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        if history is not None and history.recovered:
            err.print(f"warning: {history.recovered}", highlight=False, soft_wrap=True)


def _exit_status(found: bool, n_errors: int) -> None:
    """The exit rule of every command that reads claim files: 2 when any was malformed (the valid ones were still
    checked and printed, but the run covered only part of its input, as pytest's collection errors exit 2), else
    1 when the run found something (a verdict that differs, a claim fixed by construction, a rehearsal error),
    else 0."""
    if n_errors:
        sys.exit(2)
    if found:
        sys.exit(1)


def _timeout_seconds(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """FloatRange refuses values <= 0 but lets NaN and inf through; the project's one timeout rule decides."""
    from reprolab.claims.project import is_timeout

    if value is not None and not is_timeout(value):
        raise click.BadParameter(f"must be a finite number of seconds, got {value}", ctx=ctx, param=param)
    return value


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="reprolab")
def cli() -> None:
    """reprolab: does what we wrote down still hold?"""


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option(
    "-m", "marker", help="marker expression over scale and kind, e.g. 'fast', 'gpu', 'fast and not recorded'"
)
@click.option("-k", "keyword", help="only claims whose id contains this")
@click.option(
    "-n", "workers", type=click.IntRange(min=1), default=1, show_default=True, help="worker processes for experiment runs"
)
@click.option(
    "--update-verdicts", is_flag=True, help="rewrite mismatching recorded verdicts (the run still fails)"
)
@click.option("--no-cache", is_flag=True, help="ignore and do not write the result cache")
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0, min_open=True),
    callback=_timeout_seconds,
    help="seconds per experiment run (default: [tool.reprolab] timeout_s; a claim's timeout_s wins)",
)
@click.option("--report-dir", type=click.Path(), default=None, help="default: [tool.reprolab] reports")
@click.option(
    "--executor",
    type=click.Choice(["local", "ray"]),
    default=None,
    help="where experiment runs go (default: [tool.reprolab] executor, else local processes)",
)
@click.option("--address", help="Ray cluster address ('auto' on a head node); none: an embedded local Ray")
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="ray: retries of a dead worker",
)
def check(
    paths: tuple[str, ...],
    marker: str | None,
    keyword: str | None,
    workers: int,
    update_verdicts: bool,
    no_cache: bool,
    timeout_s: float | None,
    report_dir: str | None,
    executor: str | None,
    address: str | None,
    retries: int,
) -> None:
    """Run claims, print the ledger, write reports/latest.{json,html}, record the run in the history.

    Exit status: 2 when a claim file is malformed (the valid ones still run), else 1 when any observed verdict
    differs from the recorded one or errs, else 0.
    """
    from reprolab.claims.ledger import print_ledger

    options = {"executor": executor, "address": address, "retries": retries}
    with _session(
        workers=workers, use_cache=not no_cache, timeout_s=timeout_s, report_dir=report_dir, **options
    ) as session:
        items, n_errors = _select(session, paths, marker, keyword)
        if not items:
            err.print("no claims selected")
            sys.exit(2 if n_errors else 5)
        try:
            results = _run_with_progress(session, items)
        except RuntimeError as exc:  # e.g. the ray executor without Ray installed
            raise click.ClickException(str(exc)) from None
        print_ledger(results, console)
        recorded = session.record(results, command="reprolab " + " ".join(sys.argv[1:]))
    for message in [*session.cache.problems, *recorded.messages]:
        err.print(f"[yellow]warning[/] {escape(message)}", highlight=False, soft_wrap=True)
    if recorded.reports:
        console.print("reports: " + " ".join(str(path) for path in recorded.reports))
    mismatched = [r for r in results if not r.matches]
    if update_verdicts:
        for line in session.update_verdicts(results):
            console.print(line)
    _exit_status(bool(mismatched), n_errors)


def _run_with_progress(session: ClaimSession, items: list[LoadedClaim]):  # type: ignore[no-untyped-def]
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,  # logs get one plain line per finished run instead
    ) as progress:
        bar = progress.add_task(f"running {len(items)} claims", total=None)
        done = {"n": 0, "total": 0}

        def on_plan(n_tasks: int) -> None:
            done["total"] = n_tasks
            progress.update(bar, total=n_tasks, description=f"{len(items)} claims, {n_tasks} experiment runs")

        def on_task(task, outcome) -> None:  # type: ignore[no-untyped-def]
            done["n"] += 1
            status = (
                "cached" if outcome.cached else ("FAILED" if outcome.error else f"{outcome.seconds:.1f}s")
            )
            progress.update(bar, advance=1, description=f"{task.experiment} seed {task.seed} ({status})")
            if not err.is_terminal and not outcome.cached:
                err.print(
                    f"[{done['n']}/{done['total']}] {task.experiment} seed {task.seed}: {status}",
                    highlight=False,
                )

        return session.run(items, progress=on_task, on_plan=on_plan)


@cli.command("list")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("-m", "marker", help="marker expression over scale and kind")
def list_claims(paths: tuple[str, ...], marker: str | None) -> None:
    """Every claim with its source, scale, recorded verdict and last observed verdict (and any failed guard)."""
    from reprolab.claims.ledger import VERDICT_STYLES, failed_guards

    session = _session()
    items, n_errors = _select(session, paths, marker, None)
    with _history_errors(session.history):
        latest = session.history.latest()
    table = Table(title=f"{len(items)} claims", expand=True)
    for column in ("claim", "source", "kind", "scale", "recorded", "last observed"):
        table.add_column(column, overflow="fold")
    for item in items:
        last = latest.get(item.id)
        observed = "never run"
        if last:
            style = VERDICT_STYLES.get(last["verdict"], "")
            observed = f"[{style}]{last['verdict']}[/] ({last['started_at']})" + failed_guards(last["guards"])
        table.add_row(
            item.id, item.source.document, item.claim.kind, item.claim.scale, item.claim.verdict, observed
        )
    console.print(table)
    _exit_status(False, n_errors)


@cli.command()
@click.option(
    "--since", help="only runs since a git revision's commit time (e.g. HEAD~5, v0.1) or an ISO date"
)
@click.option("--report-dir", type=click.Path(), default=None, help="default: [tool.reprolab] reports")
def report(since: str | None, report_dir: str | None) -> None:
    """Rebuild the HTML/JSON report from the history: newest result per claim plus its verdict history."""
    from reprolab.claims.environment import revision_date
    from reprolab.claims.history import RunInfo

    session = _session(report_dir=report_dir)
    history = session.history
    given = since
    if since is not None:
        since = revision_date(since) or _iso_utc(since)
    with _history_errors(history):
        latest = history.latest(since)
        if not latest:
            if since is not None and history.latest(None):
                raise click.ClickException(f"no runs since {given} ({since}); the history holds older runs")
            raise click.ClickException("no runs in the history yet: run `reprolab check` first")
        results = [json.loads(row["payload"]) for row in latest.values()]
        run = RunInfo.current(command="reprolab report" + (f" --since {since}" if since else ""))
        written = _write_reports(session, run, results, since)
    console.print("reports: " + " ".join(str(path) for path in written))


def _write_reports(session: ClaimSession, run, results, since):  # type: ignore[no-untyped-def]
    try:
        return session.write_reports(run, results, history=session.history, since=since, write_partial=False)
    except OSError as exc:
        raise click.ClickException(session.reports_problem(exc)) from None


@cli.command("history")
@click.argument("claim_id")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
def history_command(claim_id: str, limit: int) -> None:
    """The recorded runs of one claim, newest first."""
    from reprolab.claims.ledger import VERDICT_STYLES, failed_guards

    history = _session().history
    with _history_errors(history):
        rows = history.claim_history(claim_id, limit)
    if not rows:
        raise click.ClickException(f"no history for claim {claim_id!r}")
    table = Table(title=f"history of {claim_id}")
    for column in ("when", "git", "verdict", "recorded", "observed", "95% CI", "n"):
        table.add_column(column)
    for row in rows:
        ci = f"[{row['ci_low']:.4g}, {row['ci_high']:.4g}]" if row["ci_low"] is not None else ""
        observed = f"{row['observed']:.4g}" if row["observed"] is not None else "—"
        style = VERDICT_STYLES.get(row["verdict"], "")
        verdict = f"[{style}]{row['verdict']}[/]" + failed_guards(row["guards"])  # as the ledger names them
        table.add_row(
            row["started_at"],
            (row["git_rev"] or "")[:12],
            verdict,
            row["recorded"],
            observed,
            ci,
            str(row["n_seeds"]),
        )
    console.print(table)


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), default=".")
@click.option("--package", help="the lab's Python package for experiments (default: from the directory name)")
def init(directory: Path, package: str | None) -> None:
    """Scaffold a lab's project: [tool.reprolab], notes/, a claims folder with a working example, CI."""
    from reprolab.claims.scaffold import ScaffoldError, scaffold

    directory.mkdir(parents=True, exist_ok=True)
    try:
        lines = scaffold(directory, package)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--package") from None
    except ScaffoldError as exc:
        raise click.ClickException(str(exc)) from None
    for line in lines:  # escaped: "[tool.reprolab]" is rich markup, and would be printed as nothing
        console.print(escape(line), highlight=False)
    console.print(escape(f"next: cd {directory} && reprolab check   (or: pytest claims)"), highlight=False)


def _iso_utc(text: str) -> str:
    """An ISO date or time as the history stores run times (UTC, seconds); naive times are taken as UTC. The
    history compares these strings, so an unparsable ``--since`` would silently match nothing."""
    from datetime import UTC, datetime

    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither a git revision here nor an ISO date or time (e.g. 2026-12-01, 2026-12-01T09:30)",
            param_hint="--since",
        ) from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC).isoformat(timespec="seconds")


def _folder_arg(ctx: click.Context, param: click.Parameter, value: str | None) -> Path | None:
    """A path argument as a Path; an empty one is refused, not read as the working directory (an unset ``$OUT``
    in a script would otherwise merge into wherever the script runs)."""
    if value is None:
        return None
    if not value.strip():
        raise click.BadParameter("is empty (an unset shell variable?); name the folder", ctx=ctx, param=param)
    return Path(value)


@cli.command()
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(), callback=_folder_arg)
@click.option("--quiet", is_flag=True, help="no progress bar")
@click.option("--overwrite", is_flag=True,
              help="merge into a non-empty OUT_DIR, replacing only the files an earlier reprolab merge wrote there")
@click.option("--intermediate-dir", type=click.Path(file_okay=False), default=None, callback=_folder_arg,
              help="multi-document (mergekit-multi) configs: folder for the named merges")
def merge(config: Path, out_dir: Path, quiet: bool, overwrite: bool, intermediate_dir: Path | None) -> None:
    """Weight-space merge of real checkpoints (mergekit-style YAML CONFIG), streamed tensor by tensor into OUT_DIR.

    OUT_DIR must be empty (or hold an earlier reprolab merge, with --overwrite) and apart from every input;
    files appear under their final names only once all are complete.
    """
    from reprolab.startup import paused_collector

    # torch's and numpy's modules (~170k objects) are imported with the collector paused, then frozen: neither the
    # collections during the import and the merge nor the interpreter's at exit walk them (the exit alone ~0.3 s)
    with paused_collector():
        from reprolab.mergers.weights.run import run_merge
    try:
        run_merge(config, out_dir, show_progress=not quiet, overwrite=overwrite, intermediate_dir=intermediate_dir)
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(" ".join(str(exc).split())) from None
    except KeyboardInterrupt:
        click.echo("merge interrupted; its temporary files were removed", err=True)
        raise SystemExit(130) from None


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
def audit(paths: tuple[str, ...]) -> None:
    """Prove, without running anything, that every reproduce claim can both pass and fail.

    One line per claim fixed by construction (or whose metric range is undeclared), with the reason.
    Exit status: 2 when a claim file is malformed (the valid ones are still audited), else 1 when any claim is
    not falsifiable, else 0.
    """
    from reprolab.claims.audit import audit_claims

    session = _session()
    items, errors = _select(session, paths, None, None)
    issues, audited = audit_claims(items, search=session.project.experiments)
    for issue in issues:
        console.print(escape(str(issue)), highlight=False, soft_wrap=True)
    flagged = len({issue.item.id for issue in issues})
    undeclared = len({issue.item.id for issue in issues if issue.reason.startswith("range undeclared")})
    console.print(
        f"audited {audited} reproduce claims: {flagged} flagged ({undeclared} with a range undeclared)",
        highlight=False,
    )
    _exit_status(bool(issues), errors)


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--markdown", is_flag=True, help="print the README's state-of-the-claims table (markdown)")
def summary(paths: tuple[str, ...], markdown: bool) -> None:
    """Recorded verdicts per research line and kind, from the claim files (runs nothing)."""
    from reprolab.claims.summary import VERDICTS, render_markdown, summarise

    session = _session()
    items, errors = _select(session, paths, None, None)
    rows = summarise(items, [Path(p) for p in paths] or list(session.project.claims))
    if markdown:
        click.echo(render_markdown(rows), nl=False)
    else:
        table = Table(title=f"{len(items)} claims (recorded verdicts)")
        for column in ("line", "fast", *VERDICTS, "gpu"):
            table.add_column(column)
        for row in rows:
            table.add_row(
                row.line,
                str(sum(row.fast.values())),
                *(str(row.fast[v]) for v in VERDICTS),
                str(sum(row.gpu.values())),
            )
        console.print(table)
    _exit_status(False, errors)


@cli.group()
def bench() -> None:
    """Benchmark tracking: record pytest-benchmark runs, run the benchmark tier, compare kernels with their past."""


def _bench_store():  # type: ignore[no-untyped-def]
    """Benchmark runs live in the project's history database, in their own tables."""
    from reprolab.bench.store import BenchStore

    return BenchStore(_session().history.path)


@contextmanager
def _bench_history() -> Iterator[Any]:
    """The benchmark store, with the history's one-line errors; a damaged history moved aside is said on stderr."""
    store = _bench_store()
    with _history_errors(store):
        yield store


@bench.command("record")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def bench_record(files: tuple[Path, ...]) -> None:
    """Store pytest-benchmark JSON results (every round, revision, machine) in the history database."""
    from reprolab.bench.store import BenchFileError, record_files

    try:
        with _bench_history() as store:
            recorded = record_files(store, files)
    except BenchFileError as exc:
        raise click.ClickException(str(exc)) from None
    for path, run, new in recorded:
        state = "recorded" if new else "already recorded"
        console.print(f"{state}: {path} ({len(run.kernels)} kernels, git {(run.git_rev or 'n/a')[:10]})",
                      highlight=False)


@bench.command("run")
@click.option("-k", "keyword", help="pytest -k expression over the benchmarks (the reference kernel always runs)")
@click.argument("pytest_args", nargs=-1, type=click.UNPROCESSED)
def bench_run(keyword: str | None, pytest_args: tuple[str, ...]) -> None:
    """Run the benchmark tier (pytest -m benchmark benchmarks/) with every round saved, and record it."""
    import subprocess
    from datetime import UTC, datetime

    from reprolab.bench.kernels import default_kernel_config_path, load_kernel_config
    from reprolab.bench.store import BenchFileError, record_files

    project = _session().project
    root = project.root
    out = project.state / "bench" / f"run-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pytest", "-m", "benchmark", str(root / "benchmarks"), "-p", "no:xdist",
               "--benchmark-save-data", f"--benchmark-json={out}", "-q"]
    if keyword:
        reference = load_kernel_config(default_kernel_config_path(root)).reference
        command += ["-k", f"({keyword}) or {reference}" if reference else keyword]
    command += list(pytest_args)
    err.print("running: " + " ".join(command), highlight=False, soft_wrap=True)
    # a child pytest must not inherit a surrounding pytest's state (xdist worker variables disable benchmarks)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTEST_XDIST"))}
    status = subprocess.run(command, cwd=root, check=False, env=env).returncode
    if not out.exists():
        raise click.ClickException(f"pytest wrote no benchmark results (exit {status})")
    try:
        with _bench_history() as store:
            record_files(store, [out])
    except BenchFileError as exc:
        raise click.ClickException(str(exc)) from None
    console.print(f"recorded: {out}", highlight=False)
    if status not in (0, 5):
        sys.exit(status)


def _fraction(ctx: click.Context, param: click.Parameter, value: float | None, upper: float | None) -> float | None:
    """A number > 0 (and < ``upper``); FloatRange would let NaN through, and a threshold <= -1 was a raw math
    domain error."""
    import math

    if value is not None and not (0 < value < (math.inf if upper is None else upper)):
        bound = f"in (0, {upper:g})" if upper is not None else "a finite number > 0"
        raise click.BadParameter(f"{value!r} is not {bound}", ctx=ctx, param=param)
    return value


@bench.command("compare")
@click.option("--fail-on-regression", is_flag=True, help="exit 1 when a kernel got slower")
@click.option("-k", "keyword", help="only kernels whose name contains this")
@click.option("--threshold", type=float, default=None, callback=lambda c, p, v: _fraction(c, p, v, upper=None),
              help="smallest change reported, as a fraction > 0 [0.2]")
@click.option("--alpha", type=float, default=None, callback=lambda c, p, v: _fraction(c, p, v, upper=1.0),
              help="rank-test significance level, in (0, 1) [0.01]")
def bench_compare(fail_on_regression: bool, keyword: str | None, threshold: float | None, alpha: float | None) -> None:
    """The latest run of each kernel against its own past: faster / same / slower, the factor and its CI."""
    from reprolab.bench.compare import DEFAULT_ALPHA, DEFAULT_THRESHOLD
    from reprolab.bench.kernels import KernelConfigError, default_kernel_config_path, load_kernel_config
    from reprolab.bench.series import compare_all

    with _bench_history() as store:
        runs = store.runs()
    if not runs:
        raise click.ClickException("no benchmark runs recorded yet: run `reprolab bench run` first")
    try:
        config = load_kernel_config(default_kernel_config_path(_session().project.root))
    except KernelConfigError as exc:
        raise click.ClickException(str(exc)) from None
    results = compare_all(runs, config, threshold=DEFAULT_THRESHOLD if threshold is None else threshold,
                          alpha=DEFAULT_ALPHA if alpha is None else alpha)
    if keyword and not any(keyword in item.kernel for item, _ in results):
        raise click.BadParameter(
            f"no recorded kernel contains {keyword!r} ({len(results)} kernels: `reprolab bench compare` lists them)",
            param_hint="-k",
        )
    regressed = []
    for item, comparison in results:
        if keyword and keyword not in item.kernel:
            continue
        style = {"slower": "bold red", "faster": "green"}.get(comparison.change, "")
        line = escape(comparison.line())
        console.print(f"[{style}]{line}[/]" if style else line, highlight=False, soft_wrap=True)
        if comparison.regressed:
            regressed.append(item.kernel)
    if regressed:
        console.print(f"regressed: {', '.join(regressed)}", highlight=False, soft_wrap=True)
        if fail_on_regression:
            sys.exit(1)

@cli.command()
@click.option("-m", "marker", default="gpu", show_default=True, help="marker expression; always narrowed to gpu claims")
@click.option("--scale", type=click.Choice(["smoke", "full"]), default="smoke", show_default=True)
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="stand-in data folder to reuse or fill (default: <state>/rehearse/<scale>)")
@click.option("-k", "keyword", help="only claims whose id contains this")
@click.option("--seeds", "max_seeds", type=click.IntRange(min=1), default=None,
              help="rehearse only each claim's first N seeds (default: all)")
@click.option("--steps", type=click.Choice(["smoke", "full"]), default=None,
              help="step counts: the claims' own (full) or capped (smoke); default: as --scale. "
              "`--scale full --steps smoke` runs real shapes for a few steps (memory and I/O at real size)")
def rehearse(
    marker: str, scale: str, data_dir: Path | None, keyword: str | None, max_seeds: int | None, steps: str | None
) -> None:
    """Run gpu claims end to end on stand-in data in the documented formats (verdicts ignored, no history).

    One line per claim (rehearsed or ERROR with its cause, wall time, the worker's peak RSS, the device), then
    `N rehearsed, M errors`. Exit status: 2 on a malformed claim file, else 1 when any errs, else 0.
    """
    from reprolab.rehearse.data import datasets_for, prepare, unknown_variables
    from reprolab.rehearse.overrides import caps_for
    from reprolab.rehearse.run import rehearse_claims, save_measurements

    steps = steps or scale

    session = _session(use_cache=False)
    items, n_errors = _select(session, (), f"gpu and ({marker})", keyword)
    if not items:
        err.print("no gpu claims selected")
        sys.exit(2 if n_errors else 5)
    variables = {v for it in items for v in it.claim.requires}
    unknown = unknown_variables(variables)
    if unknown:
        raise click.ClickException(f"no stand-in generator for {unknown} (see reprolab/rehearse/data.py)")
    root = data_dir or session.project.state / "rehearse" / scale
    started = time.perf_counter()
    try:
        env = prepare(root, scale, datasets_for(variables))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    console.print(f"stand-in data ({scale}) in {root}: {time.perf_counter() - started:.1f}s", highlight=False)
    lines = rehearse_claims(
        session, items, env, caps=caps_for(steps=steps == "smoke", sizes=scale == "smoke"), max_seeds=max_seeds,
        on_line=lambda line: console.print(escape(line.render()), highlight=False, soft_wrap=True),
    )
    name = "measurements.json" if steps == scale else f"measurements-{steps}-steps.json"
    save_measurements(root / name, scale, lines, env, steps)
    bad = sum(not line.ok for line in lines)
    console.print(f"{len(lines) - bad} rehearsed, {bad} errors ({time.perf_counter() - started:.0f}s)", highlight=False)
    _exit_status(bool(bad), n_errors)


@cli.command()
@click.option("-m", "marker", default="gpu", show_default=True, help="marker expression; always narrowed to gpu claims")
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="folder of a smoke rehearsal (default: <state>/rehearse/smoke)")
@click.option("-k", "keyword", help="only claims whose id contains this")
@click.option("--write", "write", is_flag=True,
              help="also write the estimates to <state>/plan.json: the Ray executor's default resource requests")
def plan(marker: str, data_dir: Path | None, keyword: str | None, write: bool) -> None:
    """Per gpu claim, the estimated peak memory and device-hours at full scale, from a smoke rehearsal.

    Reads the smoke rehearsal's measurements (run `reprolab rehearse --scale smoke` first) and extrapolates them
    linearly in each experiment's work (see reprolab/rehearse/plan.py for the model and its limits). With
    `--write`, a claim without `resources:` in its YAML is scheduled on Ray with its planned memory (and one
    GPU when the rehearsal ran on CUDA).
    """
    from reprolab.claims.ray_executor import PLAN_FILE
    from reprolab.rehearse.plan import estimates, plan_table, save_plan

    session = _session(use_cache=False)
    items, n_errors = _select(session, (), f"gpu and ({marker})", keyword)
    root = data_dir or session.project.state / "rehearse" / "smoke"
    try:
        found, missing = estimates(items, root / "measurements.json")
        rows, notes = plan_table(found, missing)
        if write:
            save_plan(session.project.state / PLAN_FILE, found, root / "measurements.json")
            notes.append(f"estimates written to {session.project.state / PLAN_FILE} (Ray's default requests)")
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    table = Table(title=f"{len(rows)} gpu claims at full scale (estimates)", expand=True)
    for column in ("claim", "experiment", "measured (smoke)", "work ratio", "est. hours (as measured)",
                   "est. peak memory"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    for note in notes:
        console.print(note, highlight=False, soft_wrap=True)
    _exit_status(False, n_errors)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
