"""On-disk cache of experiment results, keyed by (experiment, its version, its code, config, seed).

One JSON file per entry, written to a temporary file in the same directory and renamed into place, so a run
killed midway leaves either the old entry, the new one, or none: never a torn file. Every entry carries a
sha256 over its key and metrics; an entry that fails to parse, does not match its checksum (a hand edit,
disk trouble) or holds anything but a flat mapping of numbers is a miss, reported in ``problems`` and
recomputed.
"""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from reprolab.claims.files import atomic_write_text
from reprolab.claims.resolve import module_origin

_ENGINE = "reprolab.claims"  # cannot change what an experiment returns: left out of code versions


def code_version(module: str, project_root: Path | str | None = None) -> str:
    """sha256 over the source of ``module`` and every module of the project it imports, transitively.

    Found statically (``ast``, no import), including imports inside functions and the ``__init__`` of every
    package on the way. "Of the project" means: reprolab's own modules (but not the claims engine), the
    modules of the experiment's own top-level package, and any module whose source lies below
    ``project_root`` outside a site-packages folder. So editing a lab's helper invalidates exactly the cached
    results it can move, and editing another research line's code invalidates none of them.
    """
    root = Path(project_root).resolve() if project_root is not None else None
    return _code_version(module, root, _closure_stamp(module, root))


def _in_project(name: str, top: str, root: Path | None, tops: dict[str, bool]) -> Path | None:
    if name.startswith(_ENGINE) or not name:
        return None
    first = name.split(".", 1)[0]
    if first not in tops:  # judge a top-level package once: numpy's submodules are not looked up one by one
        if first in {"reprolab", top}:
            tops[first] = True
        else:
            origin = module_origin(first) if root is not None else None
            resolved = origin.resolve() if origin is not None else None
            tops[first] = (
                resolved is not None and root in resolved.parents and "site-packages" not in resolved.parts
            )
    if not tops[first]:
        return None
    return module_origin(name)


def _closure(module: str, root: Path | None) -> dict[str, Path]:
    top = module.split(".", 1)[0]
    seen: dict[str, Path] = {}
    rejected: set[str] = set()
    tops: dict[str, bool] = {}
    stack = [module]
    while stack:
        name = stack.pop()
        if name in seen or name in rejected:
            continue
        path = _in_project(name, top, root, tops)
        if path is None:  # outside the project, or an imported attribute (a class, a function)
            rejected.add(name)
            continue
        seen[name] = path
        stack.extend(_imported_modules(name, path))
        if "." in name:
            stack.append(name.rsplit(".", 1)[0])  # the parent package's __init__ runs too
    return seen


def _closure_stamp(module: str, root: Path | None) -> tuple[tuple[str, int, int], ...]:
    """(module, mtime, size) over the closure: under an unchanged stamp the digest is reused in a process.

    The closure itself is remembered with the stamp it was found under; an edit to any file in it (the only
    way to add an import) changes the stamp, and the closure is walked again.
    """
    remembered = _CLOSURES.get((module, root))
    if remembered is not None:
        closure, stamp = remembered
        if _stamp(closure) == stamp:
            return stamp
    closure = _closure(module, root)
    stamp = _stamp(closure)
    _CLOSURES[(module, root)] = (closure, stamp)
    return stamp


def _stamp(closure: dict[str, Path]) -> tuple[tuple[str, int, int], ...]:
    stamp = []
    for name, path in sorted(closure.items()):
        try:
            info = path.stat()
        except FileNotFoundError:
            return ()
        stamp.append((name, info.st_mtime_ns, info.st_size))
    return tuple(stamp)


_CLOSURES: dict[tuple[str, Path | None], tuple[dict[str, Path], tuple[tuple[str, int, int], ...]]] = {}


@cache
def _code_version(module: str, root: Path | None, stamp: tuple[tuple[str, int, int], ...]) -> str:
    del stamp  # cache key only
    digest = hashlib.sha256()
    for name, path in sorted(_CLOSURES[(module, root)][0].items()):
        digest.update(name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@cache
def _parsed_imports(path: Path, mtime_ns: int, package: str) -> tuple[str, ...]:
    del mtime_ns
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
    return tuple(found)


def _imported_modules(name: str, path: Path) -> list[str]:
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    return list(_parsed_imports(path, path.stat().st_mtime_ns, package))


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def cache_key(
    experiment: str,
    version: str,
    module: str,
    config: Mapping[str, Any],
    seed: int,
    project_root: Path | str | None = None,
    *,
    code: str | None = None,
) -> str:
    """Identity of one experiment run: name, declared version, code (see :func:`code_version`), config, seed.

    ``code``: the module's code version when the caller has it already (one per claim, not per task).
    """
    payload = {
        "experiment": experiment,
        "version": version,
        "code": code if code is not None else code_version(module, project_root),
        "config": config,
        "seed": seed,
    }
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def _checksum(key: str, metrics: Mapping[str, float]) -> str:
    body = json.dumps({"key": key, "metrics": metrics}, sort_keys=True, allow_nan=True)
    return hashlib.sha256(body.encode()).hexdigest()


def _metrics_problem(metrics: Any) -> str | None:
    if not isinstance(metrics, dict):
        return f"metrics is {type(metrics).__name__}, not a mapping"
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"metric {name!r} is {type(value).__name__} {value!r}, not a number"
    return None


class ResultCache:
    """Experiment results under ``root`` (``.reprolab/cache`` by default). ``enabled=False`` reads and writes nothing."""

    def __init__(self, root: Path | str, *, enabled: bool = True) -> None:
        self.root = Path(root)
        self.enabled = enabled
        self.problems: list[str] = []  # one line per bad entry met (each is recomputed), one if none can be written
        self._unwritable = False

    def _path(self, experiment: str, key: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in experiment)
        return self.root / safe / key[:2] / f"{key}.json"

    def get(self, experiment: str, key: str) -> dict[str, float] | None:
        if not self.enabled:
            return None
        path = self._path(experiment, key)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            return self._bad(path, f"cannot read ({exc.strerror})")
        try:
            entry = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            return self._bad(path, "not valid JSON")
        if not isinstance(entry, dict) or "metrics" not in entry:
            return self._bad(path, "not a cache entry (no 'metrics')")
        metrics = entry["metrics"]
        problem = _metrics_problem(metrics)
        if problem is not None:
            return self._bad(path, problem)
        if "checksum" not in entry:  # written by a reprolab before checksums: recomputed without fuss
            return None
        if entry["checksum"] != _checksum(key, metrics):
            return self._bad(path, "checksum mismatch (edited or damaged)")
        return {str(name): float(value) for name, value in metrics.items()}

    def _bad(self, path: Path, why: str) -> None:
        self.problems.append(f"cache entry {path}: {why}; recomputing it")
        return None

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
        clean = {str(name): float(value) for name, value in metrics.items()}
        entry = {
            "experiment": experiment,
            "config": config,
            "seed": seed,
            "seconds": seconds,
            "metrics": clean,
            "checksum": _checksum(key, clean),
        }
        text = json.dumps(entry, sort_keys=True, default=str, allow_nan=True)
        try:
            atomic_write_text(self._path(experiment, key), text, fsync=True)
        except OSError as exc:  # a read-only checkout, a full disk: the result still counts, it is just not kept
            if not self._unwritable:
                self._unwritable = True
                self.problems.append(
                    f"cache {self.root} not written ({exc.strerror or exc}): this run's results are not cached"
                )

    def past_seconds(self, experiment: str) -> dict[str, float]:
        """The longest recorded run time of each config of ``experiment`` (``canonical_json(config)`` -> s),
        over every entry on disk, whatever its seed or code version: an estimate for scheduling, never a
        result (entries are not checksummed here; an unreadable one is skipped)."""
        if not self.enabled:
            return {}
        found: dict[str, float] = {}
        for path in self._path(experiment, "00").parent.parent.glob("*/*.json"):
            try:
                entry = json.loads(path.read_bytes())
                config, seconds = canonical_json(entry["config"]), float(entry["seconds"])
            except (OSError, ValueError, TypeError, KeyError, RecursionError):
                continue
            if seconds == seconds:  # not NaN
                found[config] = max(seconds, found.get(config, 0.0))
        return found
