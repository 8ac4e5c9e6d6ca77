"""`reprolab summary --markdown` and the README's state-of-the-claims table; typed findings."""

from __future__ import annotations

from pathlib import Path

import pytest
from claimfiles import claim_yaml, write_claims, write_note
from click.testing import CliRunner

from reprolab.claims.loader import ClaimFileError, load_claim_file, load_claims
from reprolab.claims.summary import readme_block, render_markdown, summarise
from reprolab.cli import cli

ROOT = Path(__file__).resolve().parents[2]


def test_readme_holds_the_summary_of_the_suite() -> None:
    """Regenerate with `reprolab summary --markdown` and paste between the README's markers."""
    items, errors = load_claims([ROOT / "expectations"])
    assert errors == []
    block = readme_block((ROOT / "README.md").read_text(encoding="utf-8"))
    assert block is not None, "README.md lost its `reprolab summary --markdown` markers"
    assert block == render_markdown(summarise(items, [ROOT / "expectations"])), (
        "README's state of the claims is stale: run `reprolab summary --markdown` and paste its output"
    )


def test_every_own_number_that_does_not_reproduce_is_typed() -> None:
    items, _ = load_claims([ROOT / "expectations"])
    untyped = [
        item.location
        for item in items
        if item.claim.kind != "reproduce"
        and item.claim.verdict != "reproduced"
        and item.claim.finding is None
    ]
    assert untyped == [], "add `finding: inconsistency | rounding | reading` (see docs/writing-claims.md)"


def test_rows_per_line_and_kind(expectations: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (expectations.parent / "pyproject.toml").write_text("")  # a project of its own, citing its own note
    write_note(expectations.parent)
    monkeypatch.chdir(expectations.parent)
    (expectations / "lvm").mkdir()
    (expectations / "recorded").mkdir()
    write_claims(
        expectations / "lvm",
        "a.yaml",
        claim_yaml("a"),
        claim_yaml("b", verdict="refuted"),
        claim_yaml("g", verdict="untested").replace("scale: fast", "scale: gpu"),
        claim_yaml("own", verdict="not-reproduced", extra="kind: consistency\nfinding: rounding\n"),
    )
    write_claims(
        expectations / "recorded",
        "r.yaml",
        claim_yaml("r1", extra="kind: recorded\n"),
        claim_yaml("r2", verdict="not-reproduced", extra="kind: recorded\nfinding: inconsistency\n"),
    )
    items, errors = load_claims([expectations])
    assert errors == []
    text = render_markdown(summarise(items, [expectations]))
    assert (
        "| recorded / consistency (the notes' own arithmetic) | 000 | 3 | 1 | 2 (1 inconsistency, 1 rounding) |"
        in text
    )
    assert "| next-embedding prediction | 000 | 2 | 1 | 0 | 1 | 0 | 0 | 1 |" in text
    assert "1 do not follow" in text and "1 more differ only by rounding and 0 depend" in text
    result = CliRunner().invoke(cli, ["summary", "--markdown", str(expectations)])
    assert result.exit_code == 0 and result.output == text


def test_table_cells_count_fast_findings_the_sentence_every_tier(expectations: Path) -> None:
    """A gpu claim's finding is not in the fast table's cells; a refuted one annotates the refuted cell."""
    own = "kind: recorded\nfinding: {}\n"
    write_claims(
        expectations,
        "r.yaml",
        claim_yaml("f1", verdict="not-reproduced", extra=own.format("inconsistency")),
        claim_yaml("f2", verdict="refuted", extra=own.format("rounding")),
        claim_yaml("f3", verdict="not-reproduced", extra="kind: recorded\n"),
        claim_yaml("g1", verdict="not-reproduced", extra=own.format("inconsistency")).replace(
            "scale: fast", "scale: gpu"
        ),
    )
    items, errors = load_claims([expectations])
    assert errors == []
    text = render_markdown(summarise(items, [expectations]))
    row = "| recorded / consistency (the notes' own arithmetic) | 000 | 3 | 0 | 2 (1 inconsistency, 1 untyped) | "
    assert row + "1 (1 rounding) | 0 | 0 | 1 (1 not-reproduced) |" in text
    assert "(the recorded / consistency claims of both tiers), 2 do not follow" in text
    assert "1 more differ only by rounding" in text


@pytest.mark.parametrize(
    ("extra", "verdict", "message"),
    [
        ("finding: rounding\n", "not-reproduced", "types a recorded/consistency claim"),
        ("kind: recorded\nfinding: rounding\n", "reproduced", "is for a claim that does not reproduce"),
        ("kind: recorded\nfinding: rounding\n", "untested", "this one is recorded untested"),
        ("kind: consistency\nfinding: reading\n", "inconclusive", "this one is recorded inconclusive"),
        ("kind: recorded\nfinding: typo\n", "not-reproduced", "finding"),
    ],
)
def test_finding_schema(expectations: Path, extra: str, verdict: str, message: str) -> None:
    path = write_claims(expectations, "a.yaml", claim_yaml(verdict=verdict, extra=extra))
    with pytest.raises(ClaimFileError, match=message) as raised:
        load_claim_file(path)
    if "typo" not in extra:  # the line and field of 'finding' itself
        line = path.read_text().splitlines()[raised.value.line - 1].strip()
        assert (raised.value.field, line) == ("claims[demo].finding", extra.splitlines()[-1])


def test_finding_on_refuted_own_number_loads(expectations: Path) -> None:
    path = write_claims(
        expectations, "a.yaml", claim_yaml(verdict="refuted", extra="kind: recorded\nfinding: reading\n")
    )
    assert load_claim_file(path)[0].claim.finding == "reading"
