"""The state of the claims, from the suite itself: recorded verdicts per research line and kind.

``reprolab summary --markdown`` prints the table the README holds (a test fails when they differ), so the
README's counts can never drift from the claim files. Only recorded verdicts are counted: the summary runs
nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from reprolab.claims.loader import LoadedClaim

OWN_NUMBERS = "recorded / consistency (the notes' own arithmetic)"
LINE_TITLES = {
    "clustering": "mixture clustering",
    "lvm": "next-embedding prediction",
    "merging": "weight-space merging",
}
"""Directory under the claims root -> the research line's name in the table (others use the directory name)."""
VERDICTS = ("reproduced", "not-reproduced", "refuted", "inconclusive", "untested")
FINDINGS = ("inconsistency", "rounding", "reading")
MARKER_START = "<!-- reprolab summary --markdown: start (generated; do not edit) -->"
MARKER_END = "<!-- reprolab summary --markdown: end -->"


@dataclass
class Row:
    line: str
    notes: set[str] = field(default_factory=set)
    fast: Counter[str] = field(default_factory=Counter)
    gpu: Counter[str] = field(default_factory=Counter)
    findings: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    """(scale, recorded verdict, finding) -> claims: the table shows the fast tier's, the sentence counts all."""


def _line_of(item: LoadedClaim, roots: Sequence[Path]) -> str:
    if item.claim.kind != "reproduce":
        return OWN_NUMBERS
    path = item.path.resolve()
    for root in roots:
        try:
            parts = path.relative_to(root.resolve()).parts
        except ValueError:
            continue
        if len(parts) > 1:
            return LINE_TITLES.get(parts[0], parts[0])
    return LINE_TITLES.get(path.parent.name, path.parent.name)


def summarise(items: Iterable[LoadedClaim], roots: Sequence[Path | str]) -> list[Row]:
    """One row per line (reproduce claims, by directory under a root) plus one for the notes' own numbers."""
    root_paths = [Path(root) for root in roots]
    rows: dict[str, Row] = {}
    for item in items:
        line = _line_of(item, root_paths)
        row = rows.setdefault(line, Row(line))
        row.notes.add(item.source.document.split("_", 1)[0])
        (row.fast if item.claim.scale == "fast" else row.gpu)[item.claim.verdict] += 1
        if item.claim.finding is not None:
            row.findings[item.claim.scale, item.claim.verdict, item.claim.finding] += 1
    order = [OWN_NUMBERS, *LINE_TITLES.values()]
    return sorted(
        rows.values(), key=lambda r: (order.index(r.line) if r.line in order else len(order), r.line)
    )


def _notes(notes: set[str]) -> str:
    ordered = sorted(notes)
    numeric = all(n.isdigit() for n in ordered)
    if numeric and len(ordered) > 2 and int(ordered[-1]) - int(ordered[0]) == len(ordered) - 1:
        return f"{ordered[0]}-{ordered[-1]}"
    return ", ".join(ordered)


def _gpu(counts: Counter[str]) -> str:
    total = sum(counts.values())
    if not total:
        return "-"
    if counts["untested"] == total:
        return str(total)
    return f"{total} (" + ", ".join(f"{counts[v]} {v}" for v in VERDICTS if counts[v]) + ")"


def render_markdown(rows: Sequence[Row]) -> str:
    """The README's state-of-the-claims table and the count of the notes' own numbers that do not follow."""
    lines = [
        "Recorded verdicts of the fast tier (what CI checks), per line; gpu claims run nightly with the full data.",
        "",
        "| line | notes | fast claims | " + " | ".join(VERDICTS) + " | gpu claims |",
        "|---|---|---|" + "---|" * len(VERDICTS) + "---|",
    ]
    for row in rows:
        cells = [str(row.fast[verdict]) for verdict in VERDICTS]
        for column, verdict in enumerate(VERDICTS):  # which kind of finding each fast claim in the cell is
            counts = {f: row.findings["fast", verdict, f] for f in FINDINGS}
            if any(counts.values()):
                typed = [f"{n} {f}" for f, n in counts.items() if n]
                untyped = row.fast[verdict] - sum(counts.values())
                cells[column] += (
                    " (" + ", ".join(typed + ([f"{untyped} untyped"] if untyped > 0 else [])) + ")"
                )
        lines.append(
            f"| {row.line} | {_notes(row.notes)} | {sum(row.fast.values())} | "
            + " | ".join(cells)
            + f" | {_gpu(row.gpu)} |"
        )
    findings: Counter[str] = Counter()
    for row in rows:
        for (_, _, finding), count in row.findings.items():
            findings[finding] += count
    lines += [
        "",
        "Of the notes' own derived numbers (the recorded / consistency claims of both tiers), "
        f"{findings['inconsistency']} do not follow from what the notes say "
        f"elsewhere (`finding: inconsistency`); {findings['rounding']} more differ only by rounding and "
        f"{findings['reading']} depend on how the text is read (`finding: rounding`, `finding: reading`).",
    ]
    return "\n".join(lines) + "\n"


def readme_block(readme: str) -> str | None:
    """The generated block between the markers in README text, or None when the markers are missing."""
    start, end = readme.find(MARKER_START), readme.find(MARKER_END)
    if start < 0 or end < start:
        return None
    return readme[start + len(MARKER_START) : end].strip("\n") + "\n"
