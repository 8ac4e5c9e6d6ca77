"""Helpers for the claims-engine tests: claim-file text builders."""

from __future__ import annotations

import textwrap
from pathlib import Path

DOCUMENT = "000_0cacfeb2bd6edaa0.txt"
TITLE = "Merge NMI Collapse — Diagnosis Report"
SOURCE = f'source: {{document: {DOCUMENT}, title: "{TITLE}"}}\n'
NOTE = f"{TITLE}\n\nSome context. And then a quoted\n  sentence, wrapped across lines.\n"
PROJECT = '[tool.reprolab]\nclaims = ["expectations"]\nnotes = "notes"\n'


def write_note(root: Path, name: str = DOCUMENT, text: str = NOTE) -> Path:
    """The lab note that the helpers' claims cite (under ``root/notes``)."""
    notes = root / "notes"
    notes.mkdir(exist_ok=True)
    path = notes / name
    path.write_text(text, encoding="utf-8")
    return path


def claim_yaml(
    claim_id: str = "demo",
    *,
    experiment: str = "selftest.constant",
    config: str = "{value: 1.0}",
    expect: str = "{metric: value, statistic: mean, at_least: 0.5, interval: point, why: test}",
    verdict: str = "reproduced",
    extra: str = "",
) -> str:
    """One claim entry (indented for the ``claims:`` list)."""
    body = f"""\
    - id: {claim_id}
      quote: "a quoted sentence"
      statement: a statement
      scale: fast
      experiment: {experiment}
      config: {config}
      expect: {expect}
      verdict: {verdict}
    """
    text = textwrap.dedent(body).replace("\n", "\n  ").rstrip() + "\n"
    if extra:
        text += textwrap.indent(textwrap.dedent(extra), "    ")
    return "  " + text.lstrip()


def write_claims(directory: Path, name: str, *claims: str, source: str = SOURCE) -> Path:
    """A claim file in ``directory``, and the note it cites beside that directory (``../notes``)."""
    if not (directory.parent / "notes" / DOCUMENT).exists():
        write_note(directory.parent)
    path = directory / name
    path.write_text(source + "claims:\n" + "".join(claims), encoding="utf-8")
    return path
