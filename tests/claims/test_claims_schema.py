"""Schema errors that keep a claim falsifiable: finite bounds, sane seeds (issue 10 item 5)."""

from __future__ import annotations

from pathlib import Path

import pytest
from claimfiles import claim_yaml, write_claims

from reprolab.claims.loader import ClaimFileError, load_claim_file


@pytest.mark.parametrize(
    "expect",
    [
        "{metric: value, statistic: mean, at_least: .nan, why: w}",
        "{metric: value, statistic: mean, at_most: .inf, why: w}",
        "{metric: value, statistic: mean, at_least: -.inf, why: w}",
        "{metric: value, statistic: mean, between: [0, .inf], why: w}",
        "{metric: value, statistic: mean, approx: {value: .nan, abs: 0.1}, why: w}",
        "{metric: value, statistic: mean, approx: {value: 1, abs: .inf}, why: w}",
        "{metric: value, statistic: fraction, fraction: {above: .nan}, at_least: 0.5, why: w}",
        "{metric: value, statistic: mean, at_least: nan, why: w}",
    ],
)
def test_non_finite_bounds_are_schema_errors(expectations: Path, expect: str) -> None:
    path = write_claims(expectations, "a.yaml", claim_yaml(expect=expect))
    with pytest.raises(ClaimFileError, match=r"a.yaml:\d+: claims\[demo\]\.expect.*finite number"):
        load_claim_file(path)


def test_non_finite_guard_bound_is_a_schema_error(expectations: Path) -> None:
    path = write_claims(
        expectations, "a.yaml", claim_yaml(extra="valid_when:\n  - {metric: value, at_most: .inf, why: w}\n")
    )
    with pytest.raises(ClaimFileError, match=r"valid_when\[0\]\.at_most: .*finite number"):
        load_claim_file(path)


@pytest.mark.parametrize(
    ("seeds", "message"),
    [
        ("0", "count in 1..1000"),
        ("-3", "count in 1..1000"),
        ("1000000000", "count in 1..1000"),
        ("true", "valid integer"),
        ("2.0", "valid integer"),
        ("[1, true]", "valid integer"),
        ("[-1, 2]", r"0\.\.4294967295"),
        ("[4294967296]", r"0\.\.4294967295"),
        ("[]", "must not be empty"),
        ("[1, 1]", "duplicates"),
        ('"5"', "valid integer"),
    ],
)
def test_seeds_must_be_non_negative_ints_of_sane_size(expectations: Path, seeds: str, message: str) -> None:
    path = write_claims(expectations, "a.yaml", claim_yaml(extra=f"seeds: {seeds}\n"))
    with pytest.raises(ClaimFileError, match=rf"a.yaml:\d+: claims\[demo\]\.seeds.*{message}"):
        load_claim_file(path)


@pytest.mark.parametrize("seeds", ["1", "1000", "[0]", "[0, 7, 4294967295]"])
def test_sane_seeds_load(expectations: Path, seeds: str) -> None:
    write_claims(expectations, "a.yaml", claim_yaml(extra=f"seeds: {seeds}\n"))
    (item,) = load_claim_file(expectations / "a.yaml")
    assert item.claim.seed_list and all(0 <= seed < 2**32 for seed in item.claim.seed_list)


@pytest.mark.parametrize(
    ("expect", "extra", "field", "got"),
    [
        # YAML reads true/yes/on as 1.0 and false/no/off as 0.0 in a float field: a bound must be a number
        ("{metric: value, statistic: mean, at_least: true, why: w}", "", r"expect\.at_least", "boolean"),
        ("{metric: value, statistic: mean, at_most: off, why: w}", "", r"expect\.at_most", "boolean"),
        ("{metric: value, statistic: mean, between: [no, 1], why: w}", "", r"expect\.between\[0\]", "boolean"),
        ("{metric: value, statistic: mean, approx: {value: yes, abs: 0.1}, why: w}", "", r"expect\.approx\.value", "boolean"),
        ("{metric: value, statistic: fraction, fraction: {above: false}, at_least: 0.5, why: w}", "",
         r"expect\.fraction\.above", "boolean"),
        (None, "valid_when:\n  - {metric: value, at_most: on, why: w}\n", r"valid_when\[0\]\.at_most", "boolean"),
        (None, "timeout_s: true\n", "timeout_s", "boolean"),
        (None, "resources: {gpus: true}\n", r"resources\.gpus", "boolean"),  # gpus: true asked Ray for one GPU
        (None, "resources: {memory_gb: yes}\n", r"resources\.memory_gb", "boolean"),
        # pydantic would coerce a quoted number to a float: a bound must be a YAML number, as seeds must
        ("{metric: value, statistic: mean, at_least: '0.5', why: w}", "", r"expect\.at_least", "string"),
        ("{metric: value, statistic: mean, between: [0, \"1\"], why: w}", "", r"expect\.between\[1\]", "string"),
        ("{metric: value, statistic: mean, approx: {value: 1, abs: '1e-3'}, why: w}", "", r"expect\.approx\.abs", "string"),
        ("{metric: value, statistic: fraction, fraction: {below: '2'}, at_least: 0.5, why: w}", "",
         r"expect\.fraction\.below", "string"),
        (None, "valid_when:\n  - {metric: value, at_most: '2', why: w}\n", r"valid_when\[0\]\.at_most", "string"),
        (None, "timeout_s: '10'\n", "timeout_s", "string"),
        (None, "resources: {cpus: '2'}\n", r"resources\.cpus", "string"),
    ],
)
def test_non_numbers_in_number_fields_are_schema_errors(
    expectations: Path, expect: str | None, extra: str, field: str, got: str
) -> None:
    path = write_claims(expectations, "a.yaml", claim_yaml(extra=extra, **({"expect": expect} if expect else {})))
    with pytest.raises(ClaimFileError, match=rf"a.yaml:\d+: claims\[demo\]\.{field}: must be a number, got the {got}"):
        load_claim_file(path)


def test_plain_exponent_numbers_are_numbers(expectations: Path) -> None:
    """YAML 1.2 reads an unquoted 1e-3 as a number (PyYAML alone reads it as a string, now refused)."""
    expect = "{metric: value, statistic: mean, approx: {value: 1E0, abs: 1e-3}, why: w}"
    (item,) = load_claim_file(write_claims(expectations, "a.yaml", claim_yaml(expect=expect)))
    assert (item.claim.expect.approx.value, item.claim.expect.approx.abs) == (1.0, 0.001)


def test_relative_tolerance_around_zero_is_a_schema_error(expectations: Path) -> None:
    # |0| * rel is 0: the bound would accept exactly 0 and nothing else
    expect = "{metric: value, statistic: mean, approx: {value: 0, rel: 0.1}, why: w}"
    path = write_claims(expectations, "a.yaml", claim_yaml(expect=expect))
    with pytest.raises(ClaimFileError, match=r"a.yaml:9: claims\[demo\]\.expect\.approx: .*rel' tolerance of value 0"):
        load_claim_file(path)
