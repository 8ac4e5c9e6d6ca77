"""On-disk cache of experiment results, keyed by (experiment, its version, library code, config, seed).

One JSON file per entry, written to a temporary file in the same directory and renamed into place, so a run
killed midway leaves either the old entry, the new one, or none: never a torn file. A file that still fails to
parse (disk trouble, a hand edit) is treated as a miss and overwritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import reprolab

# The engine, CLI and reports cannot change an experiment's numbers, so editing them keeps the cache valid.
_NOT_EXPERIMENT_CODE = ("claims", "cli.py")


@lru_cache(maxsize=1)
def library_code_version() -> str:
    """sha256 over every source file of the library an experiment may run (computed once per process)."""
    root = Path(reprolab.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if relative.parts[0] in _NOT_EXPERIMENT_CODE:
            continue
        digest.update(str(relative).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def cache_key(experiment: str, version: str, config: Mapping[str, Any], seed: int) -> str:
    payload = canonical_json(
        {
            "experiment": experiment,
            "version": version,
            "code": library_code_version(),
            "config": config,
            "seed": seed,
        }
    )
    return hashlib.sha256(payload.encode()).hexdigest()


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
