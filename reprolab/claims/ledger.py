"""The terminal ledger: what each note claimed, what we measured, and the verdict."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from reprolab.claims.checks import Verdict, describe_guard
from reprolab.claims.runner import ClaimResult

VERDICT_STYLES: dict[str, str] = {
    Verdict.REPRODUCED: "green",
    Verdict.NOT_REPRODUCED: "yellow",
    Verdict.REFUTED: "red",
    Verdict.INCONCLUSIVE: "magenta",
    Verdict.ERROR: "bold red",
    Verdict.SKIPPED: "dim",
}


def failed_guards(guards: Iterable[Mapping[str, object]]) -> str:
    """One dim line (rich markup) per failed guard, each naming what made the verdict inconclusive; '' if none.

    ``guards``: guard outcomes as a result, ``latest.json`` and the history store them.
    """
    return "".join(f"\n[dim]{escape(describe_guard(guard))}[/]" for guard in guards if not guard.get("passed"))


def format_observed(result: ClaimResult) -> str:
    if result.observed is None:
        return "—"
    text = f"{result.observed:.6g}"
    if result.ci is not None and result.n_seeds > 1:
        text += f" [{result.ci[0]:.4g}, {result.ci[1]:.4g}]"
    if result.probability_of_improvement is not None:
        text += f" P(X>Y)={result.probability_of_improvement:.2f}"
        if result.probability_of_improvement_ci is not None:
            low, high = result.probability_of_improvement_ci
            text += f" [{low:.2f}, {high:.2f}]"
    return text


def ledger_table(results: Sequence[ClaimResult], *, title: str = "reprolab claims ledger") -> Table:
    table = Table(title=title, show_lines=False, expand=True)
    table.add_column("claim", overflow="fold", ratio=4)
    table.add_column("note", overflow="fold", ratio=2)
    table.add_column("expected", overflow="fold", ratio=3)
    table.add_column("observed [95% CI]", overflow="fold", ratio=3)
    table.add_column("n", justify="right")
    table.add_column("verdict", overflow="fold", ratio=2)
    table.add_column("recorded", overflow="fold", ratio=2)
    for result in results:
        style = VERDICT_STYLES.get(result.verdict, "")
        verdict = f"[{style}]{result.verdict}[/]"
        if result.verdict == Verdict.SKIPPED:
            verdict += f"\n[dim]{escape(result.message)}[/]"
        verdict += failed_guards(result.guards)
        recorded = result.recorded if result.matches else f"[bold red]{result.recorded} ✗[/]"
        note = result.document.split("_", 1)[0]
        table.add_row(
            escape(result.id),
            escape(f"{note} {result.kind}"),
            escape(result.expected),
            escape(format_observed(result)),
            str(result.n_seeds) if result.n_seeds else "",
            verdict,
            recorded,
        )
    return table


def summary_line(results: Sequence[ClaimResult]) -> str:
    counts: dict[str, int] = {}
    for result in results:
        counts[result.verdict] = counts.get(result.verdict, 0) + 1
    mismatches = [r for r in results if not r.matches]
    parts = ", ".join(f"{n} {verdict}" for verdict, n in sorted(counts.items()))
    return f"{len(results)} claims: {parts}; {len(mismatches)} differ from the record"


def print_ledger(results: Sequence[ClaimResult], console: Console | None = None) -> None:
    console = console or Console()
    console.print(ledger_table(results))
    console.print(summary_line(results))
    for result in results:
        if not result.matches:
            console.print(f"[bold red]✗[/] {escape(mismatch_message(result))}")


def mismatch_message(result: ClaimResult, *, update_command: str | None = None) -> str:
    """Why a claim fails: values, bound, CI, and the command that records the new verdict."""
    lines = [
        f"claim {result.id!r} ({result.file}:{result.line}) observed {result.verdict!r}, recorded {result.recorded!r}",
        f"  expected: {result.expected}",
        f"  observed: {format_observed(result)} over {result.n_seeds} seed(s)",
    ]
    for arm, values in result.values.items():
        label = f"  per-seed {arm}" if arm else "  per-seed"
        lines.append(
            f"{label}: "
            + ", ".join(f"{seed}: {value:.5g}" for seed, value in zip(result.seeds, values, strict=False))
        )
    if result.message:
        lines.append(f"  {result.message}")
    lines.extend(f"  {describe_guard(guard)}  ({guard['why']})" for guard in result.guards)
    lines.extend(f"  warning: {warning}" for warning in result.warnings)
    if result.traceback:
        lines.append(
            "  experiment traceback:\n"
            + "\n".join("    " + line for line in result.traceback.rstrip().splitlines())
        )
    if result.verdict not in (Verdict.ERROR, Verdict.SKIPPED):
        command = update_command or f"reprolab check {result.file} --update-verdicts"
        lines.append(
            f"  if this is the new truth, record it: {command}  (that run still fails; review the YAML diff)"
        )
    return "\n".join(lines)
