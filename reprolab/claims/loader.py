"""Load claim files with errors that name file, line and field.

YAML is parsed once into a node tree (which keeps line numbers) and constructed from that same tree, so every
pydantic error location can be mapped back to the line that caused it. Duplicate mapping keys, which PyYAML
would silently collapse, are errors too. Anchors and aliases are allowed, but their expansion is bounded
(an "alias bomb" is an error, not a hang), and every walk visits each distinct node once. A file that is not UTF-8 text is one error naming it.

Beyond the schema, a claim is checked against what can be known without running anything: its experiment
exists (found statically, see :mod:`reprolab.claims.resolve`), returns the metric it reads and declares the
config keys it is given; and, with a notes folder, the cited note exists and contains the title and every
quote (whitespace-normalised).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from reprolab.claims.resolve import resolve_experiment
from reprolab.claims.schema import Claim, ClaimFile, Source
from reprolab.experiments.registry import UnknownExperimentError
from reprolab.yamlsafe import Loader, YamlProblem, prepare_tree, problem_from


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


def read_claim_text(path: Path) -> str:
    """The file's text, or a ClaimFileError saying why it is not a UTF-8 text file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ClaimFileError(path, None, None, f"cannot read: {exc.strerror or exc}") from None
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ClaimFileError(path, 1, None, "file is UTF-16 text; claim files must be UTF-8")
    if b"\x00" in raw:
        line = raw.count(b"\n", 0, raw.index(b"\x00")) + 1
        raise ClaimFileError(path, line, None, "file is binary (NUL byte), not a YAML claim file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ClaimFileError(
            path, line, None, f"not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the file as UTF-8"
        ) from None


def load_claim_file(
    path: Path | str, *, notes: Path | None = None, search: Iterable[str] = ()
) -> list[LoadedClaim]:
    """Parse and validate one claim file; raise :class:`ClaimFileError` on any problem.

    ``notes``: the folder of lab notes that citations are checked against (None: not checked).
    ``search``: the project's experiment modules (``[tool.reprolab] experiments``).
    """
    path = Path(path)
    text = read_claim_text(path)
    try:
        loader = Loader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                raise ClaimFileError(path, 1, None, "file is empty")
            prepare_tree(node, text)
            data = loader.construct_document(node)
        finally:
            loader.dispose()
    except (yaml.YAMLError, RecursionError, YamlProblem) as exc:
        problem = problem_from(exc, text)
        raise ClaimFileError(path, problem.line, problem.key, problem.message) from None
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
    search = tuple(search)
    note = _note_text(path, node, parsed.source, notes) if notes is not None else None
    for index, claim in enumerate(parsed.claims):
        claim_node = claim_nodes.value[index] if isinstance(claim_nodes, yaml.SequenceNode) else node
        loaded.append(LoadedClaim(claim, parsed.source, path, claim_node.start_mark.line + 1))
        _check_experiment(path, claim_node, claim, search)
        if note is not None and _normalise(claim.quote) not in note:
            raise ClaimFileError(
                path,
                _line_of(claim_node, ("quote",)),
                f"claims[{claim.id}].quote",
                f"quote is not in {parsed.source.document} (whitespace-normalised)",
            )
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


def load_claims(
    paths: Iterable[Path | str], *, notes: Path | None = None, search: Iterable[str] = ()
) -> tuple[list[LoadedClaim], list[ClaimFileError]]:
    """Load every claim file below ``paths``. Bad files are returned as errors, never abort the rest.

    Claim ids must be unique across everything loaded together; a duplicate is an error on its second file.
    """
    claims: list[LoadedClaim] = []
    errors: list[ClaimFileError] = []
    first_seen: dict[str, LoadedClaim] = {}
    for path in iter_claim_paths(paths):
        try:
            loaded = load_claim_file(path, notes=notes, search=search)
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


# --- experiments and citations, checked statically -------------------------------------------------------------


def _check_experiment(path: Path, claim_node: yaml.Node, claim: Claim, search: tuple[str, ...]) -> None:
    try:
        spec = resolve_experiment(claim.experiment, search)
    except UnknownExperimentError as exc:
        raise ClaimFileError(path, _line_of(claim_node, ("experiment",)), "experiment", str(exc)) from None
    if spec.metrics and claim.expect.metric not in spec.metrics:
        raise ClaimFileError(
            path,
            _line_of(claim_node, ("expect", "metric")),
            "expect.metric",
            f"experiment {claim.experiment!r} returns no metric {claim.expect.metric!r} (it returns {list(spec.metrics)})",
        )
    for index, guard in enumerate(claim.valid_when):
        if spec.metrics and guard.metric not in spec.metrics:
            raise ClaimFileError(
                path,
                _line_of(claim_node, ("valid_when", index, "metric")),
                f"valid_when[{index}].metric",
                f"experiment {claim.experiment!r} returns no metric {guard.metric!r} (it returns {list(spec.metrics)})",
            )
    if spec.config_keys is None:  # declares none: not checked (yet)
        return
    given = [(("config", key), key) for key in claim.config]
    for arm, overrides in (claim.arms or {}).items():
        given.extend((("arms", arm, key), key) for key in overrides)
    for loc, key in given:
        if key not in spec.config_keys:
            raise ClaimFileError(
                path,
                _line_of(claim_node, loc),
                f"claims[{claim.id}]." + ".".join(loc),
                f"unknown config key {key!r} for experiment {claim.experiment!r} (it reads {list(spec.config_keys)})",
            )


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


@cache
def _read_note(path: Path, mtime_ns: int) -> str:
    del mtime_ns  # cache key only
    return _normalise(path.read_bytes().decode("utf-8", errors="replace"))


def _note_text(path: Path, node: yaml.Node, source: Source, notes: Path) -> str:
    """The cited note's normalised text, after checking that it exists and contains the title."""
    document = notes / source.document
    line = _line_of(node, ("source", "document"))
    if not notes.is_dir():
        raise ClaimFileError(path, line, "source.document", f"notes folder {notes} does not exist")
    if Path(source.document).is_absolute() or ".." in Path(source.document).parts or not document.is_file():
        raise ClaimFileError(path, line, "source.document", f"no note {source.document!r} in {notes}")
    try:
        text = _read_note(document, document.stat().st_mtime_ns)
    except OSError as exc:
        raise ClaimFileError(
            path, line, "source.document", f"cannot read {document}: {exc.strerror}"
        ) from None
    if _normalise(source.title) not in text:
        raise ClaimFileError(
            path, _line_of(node, ("source", "title")), "source.title", f"title is not in {source.document}"
        )
    return text


# --- node-tree helpers ------------------------------------------------------------------------------------------


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
