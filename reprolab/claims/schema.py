"""The claim-file schema (pydantic). Unknown keys are errors everywhere: a typo must never disable a check."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

Statistic = Literal["mean", "median", "iqm", "min", "max", "std", "fraction", "paired_difference"]
GuardStatistic = Literal["mean", "median", "iqm", "min", "max"]
RecordedVerdict = Literal["reproduced", "not-reproduced", "refuted", "inconclusive", "untested"]
Finding = Literal["inconsistency", "rounding", "reading"]
FINDING_VERDICTS = ("not-reproduced", "refuted")
"""The recorded verdicts a ``finding`` may type: an untested or inconclusive claim has found nothing yet."""

MAX_SEEDS = 1000
"""More seeds than this in one claim is a typo (10**9 would never finish), not a design."""
MAX_SEED_VALUE = 2**32 - 1
"""Largest seed every RNG we use accepts (numpy, torch, JAX take 32-bit seeds without folding)."""


def _a_number(value: object) -> object:
    """Only a YAML number is a number: a boolean or a quoted string would otherwise be coerced to a float."""
    if isinstance(value, bool):
        raise ValueError(f"must be a number, got the boolean {str(value).lower()} (YAML reads true/false/yes/no/on/off so)")
    if isinstance(value, str | bytes):
        try:
            finite = math.isfinite(float(value))
        except ValueError:
            finite = True  # not a number at all
        what = "a number" if finite else "a finite number"  # `nan` and `inf` unquoted are strings in YAML too
        raise ValueError(f"must be {what}, got the string {value!r}; write it as an unquoted YAML number")
    return value


Number = Annotated[float, BeforeValidator(_a_number)]
"""A float written as a YAML number: not ``true``/``yes``/``on`` (1.0), ``false``/``no``/``off`` (0.0) nor ``'0.5'``."""


class _Strict(BaseModel):
    # allow_inf_nan=False: a NaN or infinite bound makes a claim unfalsifiable, so it is a schema error.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Source(_Strict):
    document: str = Field(min_length=1, description="file name of the lab note under shared/seeds/")
    title: str = Field(min_length=1)


class Approx(_Strict):
    value: Number
    abs: Number | None = Field(default=None, gt=0)
    rel: Number | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one_tolerance(self) -> Approx:
        if (self.abs is None) == (self.rel is None):
            raise ValueError("approx needs exactly one of 'abs' or 'rel'")
        if self.rel is not None and self.value == 0:
            raise ValueError("approx: a 'rel' tolerance of value 0 is 0 (only exactly 0 passes); give 'abs'")
        return self

    @property
    def half_width(self) -> float:
        return self.abs if self.abs is not None else abs(self.value) * float(self.rel or 0.0)


class FractionPredicate(_Strict):
    above: Number | None = None
    below: Number | None = None

    @model_validator(mode="after")
    def _one_side(self) -> FractionPredicate:
        if (self.above is None) == (self.below is None):
            raise ValueError("fraction needs exactly one of 'above' or 'below'")
        return self


class _Bounded(_Strict):
    """Exactly one bound (at_least | at_most | between | approx): shared by ``expect`` and ``valid_when``."""

    at_least: Number | None = None
    at_most: Number | None = None
    between: tuple[Number, Number] | None = None
    approx: Approx | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> _Bounded:
        bounds = [
            name for name in ("at_least", "at_most", "between", "approx") if getattr(self, name) is not None
        ]
        if len(bounds) != 1:
            what = type(self).__name__.lower().replace("guard", "valid_when")
            raise ValueError(
                f"{what} needs exactly one of at_least / at_most / between / approx, got {bounds or 'none'}"
            )
        if self.between is not None and self.between[0] > self.between[1]:
            raise ValueError(f"between: lower bound {self.between[0]} exceeds upper bound {self.between[1]}")
        return self

    def accepted_interval(self) -> tuple[float, float]:
        """The closed set of statistic values that satisfy the bound, as (low, high)."""
        inf = float("inf")
        if self.at_least is not None:
            return self.at_least, inf
        if self.at_most is not None:
            return -inf, self.at_most
        if self.between is not None:
            return self.between
        assert self.approx is not None
        return self.approx.value - self.approx.half_width, self.approx.value + self.approx.half_width

    def describe_bound(self) -> str:
        if self.at_least is not None:
            return f">= {self.at_least:g}"
        if self.at_most is not None:
            return f"<= {self.at_most:g}"
        if self.between is not None:
            return f"in [{self.between[0]:g}, {self.between[1]:g}]"
        assert self.approx is not None
        tol = f"{self.approx.abs:g}" if self.approx.abs is not None else f"{self.approx.rel:g} rel"
        return f"≈ {self.approx.value:g} ± {tol}"


class Guard(_Bounded):
    """A condition on another metric of the same run that says the run is in the regime the note assumes.

    Evaluated on the point statistic over seeds; when it fails the claim's verdict is ``inconclusive``.
    """

    metric: str = Field(min_length=1)
    statistic: GuardStatistic = "mean"
    arm: str | None = None
    why: str = Field(min_length=1)

    def describe(self) -> str:
        arm = f"[{self.arm}]" if self.arm else ""
        return f"{self.statistic}({self.metric}{arm}) {self.describe_bound()}"


class Expect(_Bounded):
    metric: str = Field(min_length=1)
    statistic: Statistic
    fraction: FractionPredicate | None = None
    of: tuple[str, str] | None = None
    interval: Literal["point", "ci95"] = "point"
    why: str = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Expect:
        if (self.statistic == "fraction") != (self.fraction is not None):
            raise ValueError("'fraction: {above|below: x}' goes with statistic: fraction, and only with it")
        if (self.statistic == "paired_difference") != (self.of is not None):
            raise ValueError(
                "'of: [treatment, control]' goes with statistic: paired_difference, and only with it"
            )
        if self.of is not None and self.of[0] == self.of[1]:
            raise ValueError(
                f"of: [{self.of[0]}, {self.of[1]}] names one arm twice: the difference of an arm with itself is "
                "always 0; name the treatment arm, then the control arm"
            )
        return self

    def describe(self) -> str:
        stat = self.statistic
        if self.fraction is not None:
            side = (
                f"> {self.fraction.above:g}"
                if self.fraction.above is not None
                else f"< {self.fraction.below:g}"
            )
            stat = f"fraction({self.metric} {side})"
        elif self.of is not None:
            stat = f"mean({self.metric}[{self.of[0]}] - {self.metric}[{self.of[1]}])"
        else:
            stat = f"{stat}({self.metric})"
        suffix = " (whole 95% CI)" if self.interval == "ci95" else ""
        return f"{stat} {self.describe_bound()}{suffix}"


class Resources(_Strict):
    """What one experiment run of a claim needs (Ray resource requests under `--executor ray`)."""

    gpus: Number = Field(default=0, ge=0, le=64, allow_inf_nan=False)
    cpus: Number = Field(default=1, gt=0, le=1024, allow_inf_nan=False)
    memory_gb: Number | None = Field(default=None, gt=0, le=65536, allow_inf_nan=False)


class Claim(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=120)
    quote: str = Field(min_length=1)
    statement: str = Field(min_length=1)
    kind: Literal["reproduce", "recorded", "consistency"] = "reproduce"
    scale: Literal["fast", "gpu"]
    # a registered name (`line.name`) or `package.module:function` of any importable module
    experiment: str = Field(
        pattern=r"^([A-Za-z_][A-Za-z0-9_]*\.[A-Za-z0-9_.]+|[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*)$"
    )
    config: dict[str, Any] = Field(default_factory=dict)
    arms: dict[str, dict[str, Any]] | None = None
    # StrictInt: YAML ``true`` or ``2.0`` is not a seed.
    seeds: StrictInt | list[StrictInt] = 1
    requires: list[str] = Field(default_factory=list)
    expect: Expect
    valid_when: list[Guard] = Field(default_factory=list)
    verdict: RecordedVerdict
    finding: Finding | None = None
    evidence: str | None = None
    timeout_s: Number | None = Field(default=None, gt=0, allow_inf_nan=False)  # per experiment run
    resources: Resources | None = None  # per experiment run, for executors that schedule them (Ray)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: int | list[int]) -> int | list[int]:
        if isinstance(value, int):
            if not 1 <= value <= MAX_SEEDS:
                raise ValueError(f"seeds must be a count in 1..{MAX_SEEDS} or a list of seeds, got {value}")
        else:
            if not value:
                raise ValueError("seeds list must not be empty")
            if len(value) > MAX_SEEDS:
                raise ValueError(f"seeds list has {len(value)} seeds; at most {MAX_SEEDS}")
            bad = [seed for seed in value if not 0 <= seed <= MAX_SEED_VALUE]
            if bad:
                raise ValueError(f"seeds must be integers in 0..{MAX_SEED_VALUE} (2**32 - 1), got {bad}")
            if len(set(value)) != len(value):
                raise ValueError(f"seeds list has duplicates: {value}")
        return value

    @model_validator(mode="after")
    def _guards_name_arms(self) -> Claim:
        arms = sorted(self.arms) if self.arms else []
        for index, guard in enumerate(self.valid_when):
            if guard.arm is not None and guard.arm not in arms:
                has = f"its arms are {arms}" if arms else "the claim has no arms"
                raise ValueError(f"valid_when[{index}].arm {guard.arm!r} is not an arm of this claim ({has})")
        return self

    @field_validator("finding")
    @classmethod
    def _finding_only_for_own_numbers(cls, value: Finding | None, info: ValidationInfo) -> Finding | None:
        # a field validator (kind and verdict come before it), so the error names the line of 'finding'
        if value is None:
            return value
        if info.data.get("kind") == "reproduce":
            raise ValueError(
                "'finding' types a recorded/consistency claim that does not reproduce; a reproduce claim's "
                "result is its verdict"
            )
        verdict = info.data.get("verdict")
        if verdict is not None and verdict not in FINDING_VERDICTS:
            raise ValueError(
                f"'finding' is for a claim that does not reproduce (recorded {' or '.join(FINDING_VERDICTS)}); "
                f"this one is recorded {verdict}"
            )
        return value

    @model_validator(mode="after")
    def _arms_match(self) -> Claim:
        if self.expect.of is not None:
            if self.arms is None or len(self.arms) != 2:
                raise ValueError("paired_difference needs exactly two 'arms'")
            missing = [arm for arm in self.expect.of if arm not in self.arms]
            if missing:
                raise ValueError(
                    f"expect.of names arms {missing} that 'arms' does not define ({sorted(self.arms)})"
                )
        elif self.arms is not None:
            raise ValueError("'arms' is only used by statistic: paired_difference")
        return self

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)

    def arm_configs(self) -> dict[str, dict[str, Any]]:
        """Config per arm; a claim without arms has the single arm ``""``."""
        if self.arms is None:
            return {"": dict(self.config)}
        return {name: {**self.config, **overrides} for name, overrides in self.arms.items()}


class ClaimFile(_Strict):
    source: Source
    claims: list[Claim] = Field(min_length=1)
