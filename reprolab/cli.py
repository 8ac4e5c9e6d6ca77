"""The ``reprolab`` command: check claims, list them, report, show a claim's history, merge checkpoints."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from reprolab.claims.cache import ResultCache
from reprolab.claims.environment import revision_date
from reprolab.claims.history import History, RunInfo
from reprolab.claims.ledger import VERDICT_STYLES, print_ledger
from reprolab.claims.loader import LoadedClaim, load_claims
from reprolab.claims.report import write_reports
from reprolab.claims.runner import default_state_dir, run_claims
from reprolab.claims.selection import claim_markers, compile_marker_expression
from reprolab.claims.update import UPDATABLE, update_verdict

# Logs (CI) get a wide ledger; a terminal keeps its own width.
console = Console(stderr=False, width=None if sys.stdout.isatty() else 180)
err = Console(stderr=True)


def _default_paths() -> list[Path]:
    """``./expectations``, or the expectations/ of the checkout this package was installed from (editable)."""
    local = Path.cwd() / "expectations"
    if local.is_dir():
        return [local]
    beside_package = Path(__file__).resolve().parent.parent / "expectations"
    if beside_package.is_dir():
        return [beside_package]
    raise click.UsageError("no claim paths given and no ./expectations directory here")


def _select(paths: tuple[str, ...], marker: str | None, keyword: str | None) -> tuple[list[LoadedClaim], int]:
    """Load and filter claims; print load errors (they never stop the others). Returns (claims, n_errors)."""
    try:
        items, errors = load_claims([Path(p) for p in paths] or _default_paths())
    except FileNotFoundError as exc:
        raise click.UsageError(str(exc)) from None
    for error in errors:
        err.print(f"[bold red]claim file error[/] {escape(str(error))}", highlight=False, soft_wrap=True)
    if marker:
        try:
            predicate = compile_marker_expression(marker)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="-m") from None
        items = [item for item in items if predicate(claim_markers(item))]
    if keyword:
        items = [item for item in items if keyword in item.id]
    return items, len(errors)


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
    "-n", "workers", type=int, default=1, show_default=True, help="worker processes for experiment runs"
)
@click.option(
    "--update-verdicts", is_flag=True, help="rewrite mismatching recorded verdicts (the run still fails)"
)
@click.option("--no-cache", is_flag=True, help="ignore and do not write the result cache")
@click.option("--report-dir", type=click.Path(), default="reports", show_default=True)
def check(
    paths: tuple[str, ...],
    marker: str | None,
    keyword: str | None,
    workers: int,
    update_verdicts: bool,
    no_cache: bool,
    report_dir: str,
) -> None:
    """Run claims, print the ledger, write reports/latest.{json,html}, record the run in the history.

    Exit status: 0 when every observed verdict equals the recorded one, 1 when any differs or errs,
    2 when a claim file is malformed (the valid ones still run).
    """
    items, n_errors = _select(paths, marker, keyword)
    if not items:
        err.print("no claims selected")
        sys.exit(2 if n_errors else 5)
    state = default_state_dir()
    cache = ResultCache(state / "cache", enabled=not no_cache)
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
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

        results = run_claims(items, cache, workers=workers, progress=on_task, on_plan=on_plan)
    print_ledger(results, console)
    run = RunInfo.current(command="reprolab " + " ".join(sys.argv[1:]))
    history = History(state / "history.sqlite")
    history.record(run, results)
    json_path, html_path = write_reports(
        Path(report_dir), run, [r.to_dict() for r in results], history.verdict_series()
    )
    console.print(f"reports: {json_path} {html_path}")
    mismatched = [r for r in results if not r.matches]
    if update_verdicts:
        for result in mismatched:
            if result.verdict in UPDATABLE:
                update_verdict(result.file, result.id, result.verdict)
                console.print(f"updated {result.id}: {result.recorded} -> {result.verdict} in {result.file}")
    if mismatched:
        sys.exit(1)
    if n_errors:
        sys.exit(2)


@cli.command("list")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("-m", "marker", help="marker expression over scale and kind")
def list_claims(paths: tuple[str, ...], marker: str | None) -> None:
    """Every claim with its source, scale, recorded verdict and last observed verdict."""
    items, n_errors = _select(paths, marker, None)
    latest = History(default_state_dir() / "history.sqlite").latest()
    table = Table(title=f"{len(items)} claims", expand=True)
    for column in ("claim", "source", "kind", "scale", "recorded", "last observed"):
        table.add_column(column, overflow="fold")
    for item in items:
        last = latest.get(item.id)
        observed = "never run"
        if last:
            style = VERDICT_STYLES.get(last["verdict"], "")
            observed = f"[{style}]{last['verdict']}[/] ({last['started_at']})"
        table.add_row(
            item.id, item.source.document, item.claim.kind, item.claim.scale, item.claim.verdict, observed
        )
    console.print(table)
    if n_errors:
        sys.exit(2)


@cli.command()
@click.option(
    "--since", help="only runs since a git revision's commit time (e.g. HEAD~5, v0.1) or an ISO date"
)
@click.option("--report-dir", type=click.Path(), default="reports", show_default=True)
def report(since: str | None, report_dir: str) -> None:
    """Rebuild the HTML/JSON report from the history: newest result per claim plus its verdict history."""
    history = History(default_state_dir() / "history.sqlite")
    if since is not None:
        since = revision_date(since) or since
    latest = history.latest(since)
    if not latest:
        raise click.ClickException("no runs in the history yet: run `reprolab check` first")
    results = [json.loads(row["payload"]) for row in latest.values()]
    run = RunInfo.current(command="reprolab report" + (f" --since {since}" if since else ""))
    json_path, html_path = write_reports(Path(report_dir), run, results, history.verdict_series(since))
    console.print(f"reports: {json_path} {html_path}")


@cli.command("history")
@click.argument("claim_id")
@click.option("--limit", type=int, default=20, show_default=True)
def history_command(claim_id: str, limit: int) -> None:
    """The recorded runs of one claim, newest first."""
    rows = History(default_state_dir() / "history.sqlite").claim_history(claim_id, limit)
    if not rows:
        raise click.ClickException(f"no history for claim {claim_id!r}")
    table = Table(title=f"history of {claim_id}")
    for column in ("when", "git", "verdict", "recorded", "observed", "95% CI", "n"):
        table.add_column(column)
    for row in rows:
        ci = f"[{row['ci_low']:.4g}, {row['ci_high']:.4g}]" if row["ci_low"] is not None else ""
        observed = f"{row['observed']:.4g}" if row["observed"] is not None else "—"
        style = VERDICT_STYLES.get(row["verdict"], "")
        table.add_row(
            row["started_at"],
            (row["git_rev"] or "")[:12],
            f"[{style}]{row['verdict']}[/]",
            row["recorded"],
            observed,
            ci,
            str(row["n_seeds"]),
        )
    console.print(table)


@cli.command()
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--quiet", is_flag=True, help="no progress bar")
def merge(config: Path, out_dir: Path, quiet: bool) -> None:
    """Weight-space merge of real checkpoints (mergekit-style YAML CONFIG), streamed tensor by tensor into OUT_DIR."""
    from reprolab.mergers.weights.run import run_merge

    try:
        run_merge(config, out_dir, show_progress=not quiet)
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
def audit(paths: tuple[str, ...]) -> None:
    """Prove, without running anything, that every reproduce claim can both pass and fail.

    One line per claim fixed by construction (or whose metric range is undeclared), with the reason.
    Exit status: 0 when every claim is falsifiable, 1 when any is not, 2 when a claim file is malformed.
    """
    from reprolab.claims.audit import audit_paths

    try:
        issues, errors, audited = audit_paths([Path(p) for p in paths] or _default_paths())
    except FileNotFoundError as exc:
        raise click.UsageError(str(exc)) from None
    for error in errors:
        err.print(f"[bold red]claim file error[/] {escape(str(error))}", highlight=False, soft_wrap=True)
    for issue in issues:
        console.print(escape(str(issue)), highlight=False, soft_wrap=True)
    flagged = len({issue.item.id for issue in issues})
    undeclared = len({issue.item.id for issue in issues if issue.reason.startswith("range undeclared")})
    console.print(
        f"audited {audited} reproduce claims: {flagged} flagged ({undeclared} with a range undeclared)",
        highlight=False,
    )
    if issues:
        sys.exit(1)
    if errors:
        sys.exit(2)


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--markdown", is_flag=True, help="print the README's state-of-the-claims table (markdown)")
def summary(paths: tuple[str, ...], markdown: bool) -> None:
    """Recorded verdicts per research line and kind, from the claim files (runs nothing)."""
    from reprolab.claims.summary import VERDICTS, render_markdown, summarise

    roots = [Path(p) for p in paths] or _default_paths()
    try:
        items, errors = load_claims(roots)
    except FileNotFoundError as exc:
        raise click.UsageError(str(exc)) from None
    for error in errors:
        err.print(f"[bold red]claim file error[/] {escape(str(error))}", highlight=False, soft_wrap=True)
    rows = summarise(items, roots)
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
    if errors:
        sys.exit(2)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
