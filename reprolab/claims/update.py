"""Rewrite a claim's recorded ``verdict:`` in place, touching nothing else in the file.

The value's exact character span comes from the YAML node tree, so comments, quoting and layout survive.
A lock file serialises concurrent updates of one file (pytest-xdist workers); the rewrite keeps the file's mode.
"""

from __future__ import annotations

import fcntl
from pathlib import Path

import yaml

from reprolab.claims.checks import Verdict
from reprolab.claims.files import atomic_write_text
from reprolab.yamlsafe import Loader

# Observed verdicts that may be recorded; error and skipped never are.
UPDATABLE = tuple(str(v) for v in Verdict if v not in (Verdict.ERROR, Verdict.SKIPPED))


def update_verdict(path: Path | str, claim_id: str, verdict: str) -> bool:
    """Set ``claim_id``'s verdict in ``path`` to ``verdict``; returns False when it already was."""
    if verdict not in UPDATABLE:
        raise ValueError(f"cannot record verdict {verdict!r}; only {UPDATABLE}")
    path = Path(path)
    lock_path = path.with_name(f".{path.name}.lock")
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            text = path.read_text(encoding="utf-8")
            span = _verdict_span(text, claim_id)
            if span is None:
                raise ValueError(f"{path}: no claim {claim_id!r} with a verdict to update")
            start, end = span
            if text[start:end].strip("'\"") == verdict:
                return False
            atomic_write_text(path, text[:start] + verdict + text[end:])
            return True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            lock_path.unlink(missing_ok=True)


def _verdict_span(text: str, claim_id: str) -> tuple[int, int] | None:
    root = yaml.compose(text, Loader=Loader)
    claims = next((value for key, value in root.value if key.value == "claims"), None)
    if not isinstance(claims, yaml.SequenceNode):
        return None
    for claim in claims.value:
        fields = {key.value: value for key, value in claim.value}
        if getattr(fields.get("id"), "value", None) == claim_id and "verdict" in fields:
            node = fields["verdict"]
            return node.start_mark.index, node.end_mark.index
    return None
