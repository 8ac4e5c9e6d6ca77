"""Validity guards (``valid_when``): schema, evaluation, and how a failed guard shows up downstream."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from claimfiles import claim_yaml, write_claims
from pydantic import ValidationError
from rich.console import Console

from reprolab.claims.cache import ResultCache
from reprolab.claims.checks import Verdict, apply_guards, evaluate
from reprolab.claims.history import History, RunInfo
from reprolab.claims.ledger import ledger_table, mismatch_message
from reprolab.claims.loader import ClaimFileError, load_claim_file, load_claims
from reprolab.claims.report import render_html
from reprolab.claims.runner import run_claims
from reprolab.claims.schema import Claim, Expect, Guard

SEEDS = [0, 1, 2]


def _expect(**kwargs: object) -> Expect:
    return Expect.model_validate({"metric": "m", "statistic": "mean", "why": "w"} | kwargs)


def _guard(**kwargs: object) -> Guard:
    return Guard.model_validate({"metric": "hard", "why": "regime"} | kwargs)


def _runs(m: list[float], hard: list[float], arm: str = "") -> dict[str, list[dict[str, float]]]:
    return {arm: [{"m": a, "hard": b} for a, b in zip(m, hard, strict=True)]}


def _judge(expect: Expect, guards: list[Guard], runs: dict[str, list[dict[str, float]]]):  # type: ignore[no-untyped-def]
    per_arm = {arm: [run[expect.metric] for run in seeds] for arm, seeds in runs.items()}
    return apply_guards(evaluate(expect, per_arm, SEEDS, label="c"), guards, runs, SEEDS)


@pytest.mark.parametrize("m", [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])  # a pass and a fail by the bound
def test_failed_guard_is_inconclusive_whatever_the_bound_says(m: list[float]) -> None:
    result = _judge(_expect(at_least=0.5), [_guard(at_most=0.95)], _runs(m, [0.99, 1.0, 0.98]))
    assert result.verdict == Verdict.INCONCLUSIVE
    assert "mean(hard) <= 0.95" in result.message and "0.99" in result.message
    assert [g.passed for g in result.guards] == [False]


def test_holding_guard_leaves_the_verdict_and_is_reported() -> None:
    result = _judge(_expect(at_least=0.5), [_guard(at_most=0.95)], _runs([1.0] * 3, [0.1, 0.2, 0.3]))
    assert result.verdict == Verdict.REPRODUCED
    assert result.guards[0].passed and result.guards[0].value == pytest.approx(0.2)


def test_guard_uses_its_own_statistic() -> None:
    hard = [0.1, 0.1, 0.99]  # mean 0.4 passes, max 0.99 fails
    assert (
        _judge(_expect(at_least=0.5), [_guard(at_most=0.95)], _runs([1.0] * 3, hard)).verdict == "reproduced"
    )
    judged = _judge(_expect(at_least=0.5), [_guard(statistic="max", at_most=0.95)], _runs([1.0] * 3, hard))
    assert judged.verdict == Verdict.INCONCLUSIVE


def test_error_stays_error_and_guard_errors_are_errors() -> None:
    nan = _judge(_expect(at_least=0.5), [_guard(at_most=0.95)], _runs([1.0, math.nan, 1.0], [0.99] * 3))
    assert nan.verdict == Verdict.ERROR and nan.guards == []
    bad_guard = _judge(_expect(at_least=0.5), [_guard(at_most=0.95)], _runs([1.0] * 3, [0.1, math.inf, 0.1]))
    assert bad_guard.verdict == Verdict.ERROR and "seed 1" in bad_guard.message
    missing = _judge(_expect(at_least=0.5), [_guard(metric="nope", at_most=1)], _runs([1.0] * 3, [0.1] * 3))
    assert missing.verdict == Verdict.ERROR and "'nope'" in missing.message


def test_guard_arms_every_arm_by_default_or_the_named_one() -> None:
    expect = _expect(statistic="paired_difference", of=["t", "c"], at_least=0.5)
    runs = {**_runs([2.0] * 3, [0.1] * 3, "t"), **_runs([1.0] * 3, [0.99] * 3, "c")}
    assert _judge(expect, [_guard(at_most=0.95)], runs).verdict == Verdict.INCONCLUSIVE
    only_t = _judge(expect, [_guard(at_most=0.95, arm="t")], runs)
    assert only_t.verdict == Verdict.REPRODUCED and [g.arm for g in only_t.guards] == ["t"]


def _claim(**kwargs: object) -> dict[str, object]:
    base = {
        "id": "c",
        "quote": "q",
        "statement": "s",
        "scale": "fast",
        "experiment": "selftest.constant",
        "expect": {"metric": "value", "statistic": "mean", "at_least": 0, "why": "w"},
        "verdict": "reproduced",
    }
    return base | kwargs


@pytest.mark.parametrize(
    ("guard", "message"),
    [
        ({"metric": "h", "why": "w"}, "exactly one of"),
        ({"metric": "h", "at_most": 1, "at_least": 0, "why": "w"}, "exactly one of"),
        ({"metric": "h", "at_most": 1}, "why"),
        ({"metric": "h", "statistic": "fraction", "at_most": 1, "why": "w"}, "statistic"),
        ({"metric": "h", "at_most": 1, "arm": "t", "why": "w"}, "no arms"),
        ({"metric": "h", "at_most": math.nan, "why": "w"}, "finite"),
    ],
)
def test_guard_schema_errors(guard: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Claim.model_validate(_claim(valid_when=[guard]))


def test_loader_names_the_guard_line_of_an_unknown_metric(expectations: Path) -> None:
    path = write_claims(
        expectations,
        "a.yaml",
        claim_yaml(extra="valid_when:\n  - {metric: nmi, at_most: 1, why: w}\n"),
    )
    with pytest.raises(ClaimFileError, match=r"a.yaml:\d+: valid_when\[0\].metric: .*no metric 'nmi'"):
        load_claim_file(path)


def test_failed_guard_reaches_ledger_report_and_history(expectations: Path, tmp_path: Path) -> None:
    write_claims(
        expectations,
        "a.yaml",
        claim_yaml(
            "guarded",
            config="{value: 1.0}",
            extra="valid_when:\n  - {metric: value, statistic: min, at_most: 0.5, why: the regime}\n",
        ),
    )
    claims, errors = load_claims([expectations])
    assert errors == []
    (result,) = run_claims(claims, ResultCache(tmp_path / "cache"))
    assert result.verdict == "inconclusive" and not result.matches
    assert result.guards == [
        {"guard": "min(value) <= 0.5", "arm": "", "value": 1.0, "passed": False, "why": "the regime"}
    ]
    assert "guard min(value) <= 0.5 FAILED: 1" in mismatch_message(result)
    console = Console(record=True, width=1000)
    console.print(ledger_table([result]))
    assert "guard min(value) <= 0.5 FAILED: 1" in console.export_text()
    assert "guard min(value) &lt;= 0.5 FAILED: 1" in render_html(RunInfo.current("test"), [result.to_dict()])
    history = History(tmp_path / "history.sqlite")
    history.record(RunInfo.current("test"), [result])
    (row,) = history.claim_history("guarded")
    assert row["guards"][0]["value"] == 1.0 and row["guards"][0]["passed"] is False


@pytest.mark.parametrize(
    "config,extra,verdict",
    [
        ("{value: 1.5}", "", "error"),  # the claim's own metric escapes [0, 1]
        ("{value: 0.7, other: -0.25}", "valid_when:\n  - {metric: other, at_least: 0, why: w}\n", "error"),  # a guard's
        ("{value: 1.0}", "", "reproduced"),  # at the edge: inside
        ("{value: 0.7, other: -0.25}", "", "reproduced"),  # a metric the claim does not read is not its concern
    ],
)
def test_a_value_outside_its_declared_range_is_an_error_not_a_verdict(
    expectations: Path, tmp_path: Path, config: str, extra: str, verdict: str
) -> None:
    # the audit proves pass and fail reachable from the declared ranges; a run outside them voids the proof
    write_claims(expectations, "a.yaml", claim_yaml("ranged", experiment="selftest.fraction", config=config, extra=extra))
    claims, errors = load_claims([expectations])
    assert errors == []
    (result,) = run_claims(claims, ResultCache(tmp_path / "cache"))
    assert result.verdict == verdict, result.message
    if verdict == "error":
        assert "outside its declared range [0, 1]" in result.message and "seed 0" in result.message
