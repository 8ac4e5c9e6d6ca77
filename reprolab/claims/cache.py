"""On-disk cache of experiment results, keyed by (experiment, its version, its code, config, seed).

One JSON file per entry, written to a temporary file in the same directory and renamed into place, so a run
killed midway leaves either the old entry, the new one, or none: never a torn file. A file that still fails to
parse (disk trouble, a hand edit) is treated as a miss and overwritten.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import reprolab


@cache
def code_version(module: str) -> str:
    """sha256 over the source of ``module`` and every reprolab module it imports, transitively.

    Found statically (``ast``, no import), including imports inside functions and the ``__init__`` of every
    package on the way, so editing one research line's code does not invalidate another line's cached results,
    while any edit that can move an experiment's numbers does. The claims engine itself is left out: it cannot
    change what an experiment returns.
    """
    root = Path(reprolab.__file__).parent
    seen: dict[str, Path] = {}
    stack = [module]
    while stack:
        name = stack.pop()
        if name in seen or not (name == "reprolab" or name.startswith("reprolab.")):
            continue
        if name.startswith("reprolab.claims"):
            continue
        path = _source_path(root, name)
        if path is None:  # an imported attribute (a class, a function), not a module
            continue
        seen[name] = path
        stack.extend(_imported_modules(name, path))
        stack.append(name.rsplit(".", 1)[0])  # the parent package's __init__ runs too
    digest = hashlib.sha256()
    for name in sorted(seen):
        digest.update(name.encode())
        digest.update(seen[name].read_bytes())
    return digest.hexdigest()


def _source_path(root: Path, name: str) -> Path | None:
    relative = Path(*name.split(".")[1:])
    for candidate in (root / relative / "__init__.py", (root / relative).with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(name: str, path: Path) -> list[str]:
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_bytes())):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.append(base)
            found.extend(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
    return found


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def cache_key(experiment: str, version: str, module: str, config: Mapping[str, Any], seed: int) -> str:
    """Identity of one experiment run: name, declared version, code (see :func:`code_version`), config, seed."""
    payload = {
        "experiment": experiment,
        "version": version,
        "code": code_version(module),
        "config": config,
        "seed": seed,
    }
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


class ResultCache:
    """Experiment results under ``root`` (``.reprolab/cache`` by default). ``enabled=False`` reads and writes nothing."""

    def __init__(self, root: Path | str, *, enabled: bool = True) -> None:
        self.root = Path(root)
        self.enabled = enabled

    def _path(self, experiment: str, key: str) -> Path:
        return self.root / experiment / key[:2] / f"{key}.json"

    def get(self, experiment: str, key: str) -> dict[str, float] | None:
        if not self.enabled:
            return None
        path = self._path(experiment, key)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            metrics = entry["metrics"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return metrics if isinstance(metrics, dict) else None

    def put(
        self,
        experiment: str,
        key: str,
        metrics: Mapping[str, float],
        *,
        config: Mapping[str, Any],
        seed: int,
        seconds: float,
    ) -> None:
        if not self.enabled:
            return
        path = self._path(experiment, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {
            "experiment": experiment,
            "config": config,
            "seed": seed,
            "seconds": seconds,
            "metrics": dict(metrics),
        }
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".partial")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(json.dumps(entry, sort_keys=True, default=str, allow_nan=True))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
