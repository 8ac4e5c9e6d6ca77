"""``reprolab init``: scaffold a lab's project so that ``reprolab check`` and ``pytest`` work in it at once.

Writes ``[tool.reprolab]`` into ``pyproject.toml`` (appended when the file exists without one), a note under
``notes/``, one working experiment in the lab's package, one claim citing the note, and a CI workflow. An
existing file is never overwritten: it is left alone and reported. A ``pyproject.toml`` that is not valid TOML is
refused, naming it, before anything is written.
"""

from __future__ import annotations

import os
import re
import textwrap
import tomllib
from pathlib import Path

from reprolab.claims.files import atomic_write_text

NOTE = """\
Coin Calibration — Lab Note

We flipped a fair simulated coin 2000 times per seed. The fraction of heads stays between 0.45 and 0.55
on every seed we tried.
"""

EXPERIMENT = '''\
"""{package}'s experiments: pure functions (config, seed) -> dict of floats, registered by name."""

from __future__ import annotations

import numpy as np

from reprolab import config_value, experiment


@experiment("coin.flips", version="1", metrics={{"heads": (0.0, 1.0)}}, config_keys=("p", "n"))
def flips(config, seed):
    """Fraction of heads in ``n`` flips of a coin with P(heads) = ``p``, seeded by ``seed``."""
    p = float(config_value(config, "p", kind=(int, float)))
    n = int(config_value(config, "n", 2000, kind=int))
    rng = np.random.default_rng(seed)
    return {{"heads": float(rng.binomial(n, p) / n)}}
'''

CLAIM = """\
source: {document: coin.txt, title: "Coin Calibration — Lab Note"}
claims:
  - id: coin-is-fair
    quote: "The fraction of heads stays between 0.45 and 0.55 on every seed we tried."
    statement: a fair coin gives a heads fraction within 0.05 of one half on every seed
    scale: fast
    experiment: coin.flips
    config: {p: 0.5, n: 2000}
    seeds: 5
    expect:
      metric: heads
      statistic: min
      at_least: 0.45
      why: "the note's own band; 2000 flips give a standard error of 0.011, so 0.45 is 4.5 of them away"
    verdict: reproduced
"""

WORKFLOW = """\
name: claims
on: [push, pull_request]
jobs:
  claims:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with: {python-version: "3.11"}
      - run: pip install reprolab -e .
      - run: reprolab check -m fast -n 2
      - uses: actions/upload-artifact@v4
        if: always()
        with: {name: claims-report, path: reports/}
"""


def _table(package: str) -> str:
    return textwrap.dedent(
        f"""\
        [tool.reprolab]
        claims = ["claims"]
        notes = "notes"
        experiments = ["{package}.experiments"]
        """
    )


class ScaffoldError(Exception):
    """The project cannot be scaffolded as it is (e.g. an unreadable pyproject.toml); ``str()`` names the file."""


def package_name(root: Path) -> str:
    name = re.sub(r"\W+", "_", root.resolve().name.lower()).strip("_")
    return name if name.isidentifier() and not name[0].isdigit() else "lab"


def scaffold(root: Path, package: str | None = None) -> list[str]:
    """Create the project skeleton under ``root``; one line per file written or left alone."""
    package = package or package_name(root)
    if not package.isidentifier():
        raise ValueError(f"package name {package!r} is not a Python identifier")
    lines: list[str] = []

    def write(relative: str, text: str) -> None:
        path = root / relative
        if os.path.lexists(path):  # a symlink counts, even a dangling one: it is the lab's, never replaced
            lines.append(f"exists, left alone: {relative}")
            return
        atomic_write_text(path, text)
        lines.append(f"wrote {relative}")

    pyproject = root / "pyproject.toml"
    if not os.path.lexists(pyproject):
        write("pyproject.toml", f'[project]\nname = "{package}"\nversion = "0.1.0"\n\n' + _table(package))
    else:
        # read as TOML, not searched for the text "[tool.reprolab]": `[tool]` with `reprolab = {...}` (or a
        # spelling with spaces) has the table too, and appending a second one would break the lab's file
        try:
            text = pyproject.read_text(encoding="utf-8")
            tool = tomllib.loads(text).get("tool", {})
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ScaffoldError(f"{pyproject}: cannot read: {exc}; left it alone (fix it, then run init again)") from None
        if not isinstance(tool, dict):
            raise ScaffoldError(f"{pyproject}: tool must be a table, got {tool!r}; left it alone")
        if "reprolab" in tool:
            lines.append("exists, left alone: [tool.reprolab] in pyproject.toml")
        else:
            # through a symlink to its target: the rename would otherwise put a plain file in the link's place
            atomic_write_text(pyproject.resolve(), text.rstrip("\n") + "\n\n" + _table(package))
            lines.append("added [tool.reprolab] to pyproject.toml")
    write("notes/coin.txt", NOTE)
    write(f"{package}/__init__.py", "")
    write(f"{package}/experiments.py", EXPERIMENT.format(package=package))
    write("claims/coin.yaml", CLAIM)
    write(".github/workflows/claims.yml", WORKFLOW)
    return lines
