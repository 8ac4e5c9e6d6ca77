"""Malformed claim files give one-line errors naming file, line and field; good files load."""

from __future__ import annotations

from pathlib import Path

import pytest
from claimfiles import SOURCE, claim_yaml, write_claims

from reprolab.claims.loader import ClaimFileError, load_claim_file, load_claims


def test_good_file_loads_with_claim_lines(expectations: Path) -> None:
    path = write_claims(expectations, "a.yaml", claim_yaml("first"), claim_yaml("second"))
    loaded = load_claim_file(path)
    assert [item.id for item in loaded] == ["first", "second"]
    lines = path.read_text().splitlines()
    for item in loaded:
        assert f"id: {item.id}" in lines[item.line - 1]
    assert loaded[0].claim.seed_list == [0]


def _error(path: Path) -> ClaimFileError:
    with pytest.raises(ClaimFileError) as info:
        load_claim_file(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:")
    return info.value


def test_yaml_syntax_error_names_line(expectations: Path) -> None:
    path = expectations / "bad.yaml"
    path.write_text(SOURCE + "claims:\n  - id: x\n    quote: [unclosed\n")
    error = _error(path)
    assert "YAML syntax" in error.message and error.line is not None and error.line >= 3


def test_unknown_key_names_field_and_line(expectations: Path) -> None:
    path = write_claims(expectations, "a.yaml", claim_yaml("typo", extra="seeeds: 3\n"))
    error = _error(path)
    assert error.field == "claims[typo].seeeds"
    assert "unknown key 'seeeds'" in error.message
    assert "seeeds" in path.read_text().splitlines()[error.line - 1]


def test_wrong_type(expectations: Path) -> None:
    path = write_claims(
        expectations,
        "a.yaml",
        claim_yaml("wt", expect="{metric: value, statistic: mean, at_least: lots, why: w}"),
    )
    error = _error(path)
    assert error.field == "claims[wt].expect.at_least"
    assert "lots" in path.read_text().splitlines()[error.line - 1]


def test_missing_field(expectations: Path) -> None:
    text = claim_yaml("nq").replace('    quote: "a quoted sentence"\n', "")
    error = _error(write_claims(expectations, "a.yaml", text))
    assert error.field == "claims[nq].quote" and "missing required field 'quote'" in error.message


def test_duplicate_yaml_key(expectations: Path) -> None:
    error = _error(write_claims(expectations, "a.yaml", claim_yaml("dup", extra="verdict: refuted\n")))
    assert error.field == "verdict" and "duplicate key" in error.message


def test_two_bounds_rejected(expectations: Path) -> None:
    expect = "{metric: value, statistic: mean, at_least: 0, at_most: 1, why: w}"
    error = _error(write_claims(expectations, "a.yaml", claim_yaml("tb", expect=expect)))
    assert "exactly one of at_least" in error.message


def test_paired_difference_needs_arms(expectations: Path) -> None:
    expect = "{metric: value, statistic: paired_difference, of: [a, b], at_least: 0, why: w}"
    error = _error(write_claims(expectations, "a.yaml", claim_yaml("pd", expect=expect)))
    assert "two 'arms'" in error.message


def test_paired_difference_of_one_arm_twice_is_an_error(expectations: Path) -> None:
    # treatment - control of one arm is 0 on every seed: a claim that can never pass `at_least: 0.1`
    expect = "{metric: value, statistic: paired_difference, of: [a, a], at_least: 0.1, why: w}"
    claim = claim_yaml("pd", expect=expect, extra="arms: {a: {value: 2}, b: {value: 1}}\n")
    error = _error(write_claims(expectations, "a.yaml", claim))
    assert error.field == "claims[pd].expect" and "names one arm twice" in error.message
    assert error.line == 9


def test_unknown_experiment_module_and_name(expectations: Path) -> None:
    error = _error(write_claims(expectations, "a.yaml", claim_yaml("um", experiment="nosuchline.run")))
    assert error.field == "experiment" and "no module registers it" in error.message
    assert "reprolab.experiments.nosuchline" in error.message
    error = _error(write_claims(expectations, "b.yaml", claim_yaml("un", experiment="selftest.missing")))
    assert error.field == "experiment" and "selftest.constant" in error.message


def test_unknown_declared_metric(expectations: Path) -> None:
    expect = "{metric: nmi, statistic: mean, at_least: 0, why: w}"
    error = _error(write_claims(expectations, "a.yaml", claim_yaml("um", expect=expect)))
    assert error.field == "expect.metric" and "'nmi'" in error.message


def test_duplicate_claim_id_across_files_reported_not_fatal(expectations: Path) -> None:
    write_claims(expectations, "a.yaml", claim_yaml("same"))
    write_claims(expectations, "b.yaml", claim_yaml("same"), claim_yaml("other"))
    (expectations / "c.yaml").write_text("not: [a claim file")
    claims, errors = load_claims([expectations])
    assert [c.id for c in claims] == ["same"]
    assert len(errors) == 2
    assert any("duplicate claim id 'same'" in str(e) and "b.yaml" in str(e) for e in errors)


def test_duplicate_claim_id_within_file(expectations: Path) -> None:
    write_claims(expectations, "a.yaml", claim_yaml("twice"), claim_yaml("twice"))
    claims, errors = load_claims([expectations])
    assert claims == [] and "duplicate claim id 'twice'" in str(errors[0])


def test_empty_and_non_mapping_files(expectations: Path) -> None:
    (expectations / "empty.yaml").write_text("")
    assert "empty" in _error(expectations / "empty.yaml").message
    (expectations / "list.yaml").write_text("- 1\n- 2\n")
    assert "top level" in _error(expectations / "list.yaml").message
