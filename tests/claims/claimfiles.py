"""Helpers for the claims-engine tests: claim-file text builders."""

from __future__ import annotations

import textwrap
from pathlib import Path

SOURCE = 'source: {document: 000_0cacfeb2bd6edaa0.txt, title: "Merge NMI Collapse — Diagnosis Report"}\n'


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
    path = directory / name
    path.write_text(source + "claims:\n" + "".join(claims), encoding="utf-8")
    return path
