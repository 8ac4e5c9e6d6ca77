"""A project's reprolab configuration: the ``[tool.reprolab]`` table of its ``pyproject.toml``.

```toml
[tool.reprolab]
claims = ["expectations"]      # directories of claim files (default)
notes = "notes"                # the lab notes that claims cite (default)
state = ".reprolab"            # cache and history (default)
reports = "reports"            # latest.json / latest.html (default)
timeout_s = 3600               # per experiment run; a claim's own timeout_s wins (default: none)
experiments = ["mylab.experiments"]  # modules whose @experiment names claims may use unqualified
executor = "local"             # or "ray": experiment runs as Ray tasks (see docs/scaling.md)
portable_numerics = true       # workers held to AVX2 kernels: the same bits on any AVX2 CPU (numerics.py)
```

Every path is relative to the directory holding ``pyproject.toml``. The folders reprolab writes (``state``,
``reports``) must stay inside it (an absolute path or one leading out with ``..`` is an error naming the key; a
symlinked folder inside the project may point anywhere); the ones it only reads (``claims``, ``notes``) may lie
elsewhere, e.g. notes in a sibling repository. A project without the table is not a
reprolab project: the pytest plugin leaves its YAML alone.
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

_KNOWN_KEYS = {
    "claims", "notes", "state", "reports", "timeout_s", "experiments", "executor", "portable_numerics",
}
EXECUTORS = ("local", "ray")


class ProjectConfigError(ValueError):
    """``[tool.reprolab]`` is malformed; ``str()`` names the file and the key."""


@dataclass(frozen=True)
class Project:
    root: Path
    claims: tuple[Path, ...] = ()
    notes: Path | None = None
    state: Path = Path(".reprolab")
    reports: Path = Path("reports")
    timeout_s: float | None = None
    experiments: tuple[str, ...] = ()
    executor: str = "local"
    portable_numerics: bool = True  # experiment workers held to AVX2 kernels (claims/numerics.py)
    configured: bool = False  # False: no [tool.reprolab] table, defaults only
    pyproject: Path | None = field(default=None, compare=False)

    def owns(self, path: Path) -> bool:
        """True when ``path`` lies in one of the project's claims directories."""
        resolved = path.resolve()
        return any(resolved == d or d in resolved.parents for d in (c.resolve() for c in self.claims))

    def missing_claims(self) -> list[Path]:
        """The configured claims folders that do not exist (a typo beside a real one drops its claims)."""
        return [c for c in self.claims if not c.is_dir()]


def is_timeout(value: object) -> bool:
    """Whether ``value`` is a usable timeout: a positive finite number of seconds. NaN fails every comparison,
    so a NaN timeout would never fire; this is the one rule for the project file, the CLI and the plugin."""
    return not isinstance(value, bool) and isinstance(value, int | float) and 0 < value < math.inf


def _defaults(root: Path, pyproject: Path | None, configured: bool, table: dict[str, Any]) -> Project:
    where = f"{pyproject}: [tool.reprolab]"
    unknown = sorted(set(table) - _KNOWN_KEYS)
    if unknown:
        raise ProjectConfigError(f"{where}: unknown key {unknown[0]!r} (known: {sorted(_KNOWN_KEYS)})")

    def path_list(key: str, default: list[str]) -> tuple[Path, ...]:
        value = table.get(key, default)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ProjectConfigError(f"{where}: {key} must be a list of directory names, got {value!r}")
        return tuple(root / v for v in value)

    def one_path(key: str, default: str, *, written: bool = False) -> Path:
        value = table.get(key, default)
        if not isinstance(value, str) or not value:
            raise ProjectConfigError(f"{where}: {key} must be a directory name, got {value!r}")
        # a folder reprolab writes stays inside the project, checked as written (a symlinked folder inside it is
        # the lab's choice): `state = "/"` would put the cache and history in the filesystem's root, `reports =
        # "../x"` write into a neighbour's checkout. The folders only read (claims, notes) may lie anywhere.
        if written and (os.path.isabs(value) or os.path.normpath(value).split(os.sep)[0] == os.pardir):
            raise ProjectConfigError(
                f"{where}: {key} must be a path inside the project, relative to {root}, got {value!r}"
            )
        return root / value

    timeout = table.get("timeout_s")
    if timeout is not None and not is_timeout(timeout):
        raise ProjectConfigError(f"{where}: timeout_s must be a positive number of seconds, got {timeout!r}")
    experiments = table.get("experiments", [])
    if not isinstance(experiments, list) or not all(isinstance(m, str) and m for m in experiments):
        raise ProjectConfigError(f"{where}: experiments must be a list of module names, got {experiments!r}")
    executor = table.get("executor", "local")
    if executor not in EXECUTORS:
        raise ProjectConfigError(f"{where}: executor must be one of {list(EXECUTORS)}, got {executor!r}")
    portable = table.get("portable_numerics", True)
    if not isinstance(portable, bool):
        raise ProjectConfigError(f"{where}: portable_numerics must be true or false, got {portable!r}")
    return Project(
        root=root,
        claims=path_list("claims", ["expectations"]),
        notes=one_path("notes", "notes"),
        state=one_path("state", ".reprolab", written=True),
        reports=one_path("reports", "reports", written=True),
        timeout_s=float(timeout) if timeout is not None else None,
        experiments=tuple(experiments),
        executor=executor,
        portable_numerics=portable,
        configured=configured,
        pyproject=pyproject,
    )


@lru_cache(maxsize=64)
def _read(pyproject: Path, mtime: float) -> Project:
    del mtime  # part of the cache key only: an edited pyproject.toml is read again
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ProjectConfigError(f"{pyproject}: cannot read: {exc}") from None
    tool = data.get("tool", {})
    if not isinstance(tool, dict):
        raise ProjectConfigError(f"{pyproject}: tool must be a table, got {tool!r}")
    table = tool.get("reprolab")
    if table is not None and not isinstance(table, dict):
        raise ProjectConfigError(f"{pyproject}: [tool.reprolab] must be a table")
    return _defaults(pyproject.parent, pyproject, table is not None, table or {})


def find_project(start: Path | None = None) -> Project:
    """The project of the nearest ``pyproject.toml`` at or above ``start`` (default: the cwd).

    Without any ``pyproject.toml``, the defaults rooted at ``start`` (``configured`` is False).
    """
    here = (start or Path.cwd()).resolve()
    if here.is_file():
        here = here.parent
    for candidate in (here, *here.parents):
        pyproject = candidate / "pyproject.toml"
        if pyproject.is_file():
            return _read(pyproject, pyproject.stat().st_mtime)
    return _defaults(here, None, False, {})


def configured_project(start: Path) -> Project | None:
    """The project at or above ``start`` when its pyproject.toml has ``[tool.reprolab]``, else None."""
    project = find_project(start)
    return project if project.configured else None
