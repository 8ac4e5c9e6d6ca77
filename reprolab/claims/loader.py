"""Load claim files with errors that name file, line and field.

YAML is parsed once into a node tree (which keeps line numbers) and constructed from that same tree, so every
pydantic error location can be mapped back to the line that caused it. Duplicate mapping keys, which PyYAML
would silently collapse, are errors too.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from reprolab.claims.schema import Claim, ClaimFile, Source

# libyaml's parser (when PyYAML was built with it) is ~10x faster and keeps the same marks (line, column, index).
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ClaimFileError(ValueError):
    """A claim file is malformed. ``str()`` is the one-line ``file:line: field: message`` form."""

    def __init__(self, path: Path | str, line: int | None, field: str | None, message: str) -> None:
        self.path, self.line, self.field, self.message = Path(path), line, field, message
        where = f"{self.path}:{line}" if line is not None else f"{self.path}"
        what = f" {field}:" if field else ""
        super().__init__(f"{where}:{what} {message}")


@dataclass(frozen=True)
class LoadedClaim:
    """A validated claim with where it came from."""

    claim: Claim
    source: Source
    path: Path
    line: int  # 1-based line of the claim's first key

    @property
    def id(self) -> str:
        return self.claim.id

    @property
    def location(self) -> str:
        return f"{self.path}:{self.line}"


def load_claim_file(path: Path | str) -> list[LoadedClaim]:
    """Parse and validate one claim file; raise :class:`ClaimFileError` on any problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ClaimFileError(path, None, None, f"cannot read: {exc.strerror}") from None
    try:
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                raise ClaimFileError(path, 1, None, "file is empty")
            _reject_duplicate_keys(path, node)
            data = loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise ClaimFileError(path, line, None, f"YAML syntax: {exc.problem or exc.context}") from None
    if not isinstance(data, dict):
        raise ClaimFileError(
            path, node.start_mark.line + 1, None, "top level must be a mapping with 'source' and 'claims'"
        )
    try:
        parsed = ClaimFile.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = tuple(error["loc"])
        field = _field_name(loc, data)
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = f"unknown key {loc[-1]!r}"
        elif error["type"] == "missing":
            message = f"missing required field {loc[-1]!r}"
        extra = f" ({len(exc.errors()) - 1} more error(s) after fixing this)" if len(exc.errors()) > 1 else ""
        raise ClaimFileError(path, _line_of(node, loc), field, message + extra) from None
    claim_nodes = _value_of(node, "claims")
    loaded = []
    for index, claim in enumerate(parsed.claims):
        claim_node = claim_nodes.value[index] if isinstance(claim_nodes, yaml.SequenceNode) else node
        loaded.append(LoadedClaim(claim, parsed.source, path, claim_node.start_mark.line + 1))
        _check_experiment(path, claim_node, claim)
    return loaded


def iter_claim_paths(paths: Iterable[Path | str]) -> Iterator[Path]:
    """Every ``*.yaml``/``*.yml`` file named or found below the given paths, sorted, each once."""
    seen: set[Path] = set()
    for entry in paths:
        entry = Path(entry)
        if not entry.exists():
            raise FileNotFoundError(f"no such claim file or directory: {entry}")
        found = (
            [entry]
            if entry.is_file()
            else sorted(p for p in entry.rglob("*") if p.suffix in {".yaml", ".yml"})
        )
        for path in found:
            resolved = path.resolve()
            if resolved not in seen:
                seen.add(resolved)
                yield path


def load_claims(paths: Iterable[Path | str]) -> tuple[list[LoadedClaim], list[ClaimFileError]]:
    """Load every claim file below ``paths``. Bad files are returned as errors, never abort the rest.

    Claim ids must be unique across everything loaded together; a duplicate is an error on its second file.
    """
    claims: list[LoadedClaim] = []
    errors: list[ClaimFileError] = []
    first_seen: dict[str, LoadedClaim] = {}
    for path in iter_claim_paths(paths):
        try:
            loaded = load_claim_file(path)
        except ClaimFileError as exc:
            errors.append(exc)
            continue
        duplicate = check_unique_ids(loaded, first_seen)
        if duplicate is not None:
            errors.append(duplicate)
            continue
        claims.extend(loaded)
    return claims, errors


def check_unique_ids(loaded: list[LoadedClaim], first_seen: dict[str, LoadedClaim]) -> ClaimFileError | None:
    """Register ``loaded``'s ids in ``first_seen``; return an error for the first id seen before (in any file)."""
    this_file: dict[str, LoadedClaim] = {}
    for item in loaded:
        earlier = first_seen.get(item.id) or this_file.get(item.id)
        if earlier is not None:
            return ClaimFileError(
                item.path, item.line, "id", f"duplicate claim id {item.id!r} (first at {earlier.location})"
            )
        this_file[item.id] = item
    first_seen.update(this_file)
    return None


# --- experiment names, checked statically --------------------------------------------------------------------


@dataclass(frozen=True)
class DeclaredExperiment:
    """What an ``@experiment(...)`` call declares, read from source as literals."""

    metrics: tuple[str, ...]
    metric_ranges: dict[str, tuple[float | None, float | None]] | None  # None: tuple form, or not a literal


@cache
def declared_experiments(module_name: str) -> dict[str, DeclaredExperiment] | None:
    """Experiments a module registers, found by reading its source (no import: no torch/JAX at collection).

    Returns ``{name: declaration}``, or ``None`` when the module does not exist.
    """
    spec = importlib.util.find_spec(f"reprolab.experiments.{module_name}")
    if spec is None or spec.origin is None:
        return None
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    found: dict[str, DeclaredExperiment] = {}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "experiment" and node.args):
            continue
        name = node.args[0]
        if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
            continue
        metrics: tuple[str, ...] = ()
        ranges: dict[str, tuple[float | None, float | None]] | None = None
        for keyword in node.keywords:
            if keyword.arg == "metrics":
                try:
                    declared = ast.literal_eval(keyword.value)
                except ValueError:
                    declared = ()  # computed at import time: checked when the experiment runs
                metrics = tuple(declared)
                if isinstance(declared, dict):
                    ranges = {str(metric): tuple(bounds) for metric, bounds in declared.items()}  # type: ignore[misc]
        found[name.value] = DeclaredExperiment(metrics, ranges)
    return found


@cache
def registered_experiments(module_name: str) -> dict[str, tuple[str, ...]] | None:
    """``{name: declared_metrics}`` of a module's experiments (see :func:`declared_experiments`), or ``None``."""
    declared = declared_experiments(module_name)
    return None if declared is None else {name: item.metrics for name, item in declared.items()}


def _check_experiment(path: Path, claim_node: yaml.Node, claim: Claim) -> None:
    module_name = claim.experiment.split(".", 1)[0]
    known = registered_experiments(module_name)
    line = _line_of(claim_node, ("experiment",))
    if known is None:
        raise ClaimFileError(
            path,
            line,
            "experiment",
            f"unknown experiment {claim.experiment!r}: no module reprolab.experiments.{module_name}",
        )
    if claim.experiment not in known:
        raise ClaimFileError(
            path,
            line,
            "experiment",
            f"unknown experiment {claim.experiment!r}; {module_name} registers {sorted(known)}",
        )
    metrics = known[claim.experiment]
    if metrics and claim.expect.metric not in metrics:
        raise ClaimFileError(
            path,
            _line_of(claim_node, ("expect", "metric")),
            "expect.metric",
            f"experiment {claim.experiment!r} returns no metric {claim.expect.metric!r} (it returns {list(metrics)})",
        )
    for index, guard in enumerate(claim.valid_when):
        if metrics and guard.metric not in metrics:
            raise ClaimFileError(
                path,
                _line_of(claim_node, ("valid_when", index, "metric")),
                f"valid_when[{index}].metric",
                f"experiment {claim.experiment!r} returns no metric {guard.metric!r} (it returns {list(metrics)})",
            )


# --- node-tree helpers ------------------------------------------------------------------------------------------


def _reject_duplicate_keys(path: Path, node: yaml.Node) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                raise ClaimFileError(
                    path, key_node.start_mark.line + 1, str(key), f"duplicate key (first on line {seen[key]})"
                )
            seen[key] = key_node.start_mark.line + 1
            _reject_duplicate_keys(path, value_node)
    elif isinstance(node, yaml.SequenceNode):
        for child in node.value:
            _reject_duplicate_keys(path, child)


def _value_of(node: yaml.Node, key: Any) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if key_node.value == str(key):
                return value_node
    if isinstance(node, yaml.SequenceNode) and isinstance(key, int) and 0 <= key < len(node.value):
        return node.value[key]
    return None


def _line_of(node: yaml.Node, loc: tuple[Any, ...]) -> int:
    """Deepest line that ``loc`` reaches in the node tree (the parent's line for a missing key)."""
    current = node
    for part in loc:
        child = _value_of(current, part)
        if child is None:
            if isinstance(current, yaml.MappingNode):  # unknown key: point at the key itself
                for key_node, _ in current.value:
                    if key_node.value == str(part):
                        return key_node.start_mark.line + 1
            break
        current = child
    return current.start_mark.line + 1


def _field_name(loc: tuple[Any, ...], data: dict[str, Any]) -> str:
    """``claims[3].expect.at_least`` becomes ``claims[<id>].expect.at_least`` when the claim has an id."""
    parts: list[str] = []
    for index, part in enumerate(loc):
        if isinstance(part, int):
            label = str(part)
            if index == 1 and loc[0] == "claims":
                claims = data.get("claims")
                if (
                    isinstance(claims, list)
                    and part < len(claims)
                    and isinstance(claims[part], dict)
                    and "id" in claims[part]
                ):
                    label = str(claims[part]["id"])
            parts.append(f"[{label}]")
        elif not parts:
            parts.append(str(part))
        else:
            parts.append(f".{part}")
    return "".join(parts)
