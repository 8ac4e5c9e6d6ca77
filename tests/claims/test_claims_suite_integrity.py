"""The project's own claim suite: every file loads, every claim cites an existing note and quotes it verbatim."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest

from reprolab.claims.loader import load_claims

ROOT = Path(__file__).resolve().parents[2]
NOTES = ROOT / "notes"
CLAIMS, ERRORS = load_claims([ROOT / "expectations"])


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


@cache
def _note(document: str) -> str:
    return _normalise((NOTES / document).read_text(encoding="utf-8"))


def test_every_claim_file_loads() -> None:
    assert [str(error) for error in ERRORS] == []
    assert len(CLAIMS) > 0


@pytest.mark.parametrize("item", CLAIMS, ids=[c.id for c in CLAIMS])
def test_claim_cites_its_note_verbatim(item) -> None:  # type: ignore[no-untyped-def]
    assert (NOTES / item.source.document).is_file(), (
        f"{item.location}: source.document {item.source.document!r} is not in notes/"
    )
    note = _note(item.source.document)
    assert _normalise(item.source.title) in note, f"{item.path}: source.title is not the note's title"
    assert _normalise(item.claim.quote) in note, (
        f"{item.location}: quote is not verbatim in {item.source.document}"
    )


def test_gpu_claims_name_their_data() -> None:
    missing = [
        c.location
        for c in CLAIMS
        if c.claim.scale == "gpu" and c.claim.kind == "reproduce" and not c.claim.requires
    ]
    assert missing == [], "gpu claims must list the environment variables of their full data"
