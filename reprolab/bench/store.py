"""Benchmark results in the history database: every round of every kernel, with revision and machine.

The tables (``bench_runs``, ``bench_kernels``) live in ``.reprolab/history.sqlite`` beside the claim history but
are created and read only here, so the claims history and the benchmark store evolve independently. A run's id
is a hash of the pytest-benchmark JSON it came from: recording the same file twice stores it once.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
from collections.abc import Iterable, Mapping
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reprolab.validation import is_real

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bench_runs (
    run_id TEXT PRIMARY KEY,
    recorded_at TEXT NOT NULL,
    git_rev TEXT,
    commit_time TEXT,
    dirty INTEGER,
    machine TEXT NOT NULL,
    source TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS bench_kernels (
    run_id TEXT NOT NULL REFERENCES bench_runs(run_id),
    kernel TEXT NOT NULL,
    name TEXT NOT NULL,
    grp TEXT,
    params TEXT NOT NULL,
    rounds TEXT NOT NULL,
    median REAL NOT NULL,
    min REAL NOT NULL,
    mean REAL NOT NULL,
    iqr REAL,
    extra_info TEXT NOT NULL,
    PRIMARY KEY (run_id, kernel)
);
CREATE INDEX IF NOT EXISTS bench_kernels_by_kernel ON bench_kernels(kernel);
"""


class BenchFileError(ValueError):
    """A file that is not a pytest-benchmark JSON result; the message names the file and the field."""


@dataclass(frozen=True)
class KernelRun:
    """One kernel in one benchmark run: its rounds (seconds per call) and what the test reported beside them."""

    kernel: str
    name: str
    rounds: tuple[float, ...]
    median: float
    group: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    extra_info: Mapping[str, Any] = field(default_factory=dict)
    minimum: float = math.nan
    mean: float = math.nan
    iqr: float | None = None


@dataclass(frozen=True)
class BenchRun:
    run_id: str
    recorded_at: str
    git_rev: str | None
    commit_time: str | None
    dirty: bool
    machine: str
    source: str
    kernels: tuple[KernelRun, ...]


MACHINE_ENV = "REPROLAB_BENCH_MACHINE"


def _machine(info: Mapping[str, Any]) -> str:
    """What a series is kept per: ``$REPROLAB_BENCH_MACHINE`` when set, else the CPU model and count (not the
    host name, which a CI container changes on every run)."""
    if os.environ.get(MACHINE_ENV):
        return os.environ[MACHINE_ENV]
    cpu = info.get("cpu") or {}
    brand = cpu.get("brand_raw") or info.get("processor") or "unknown cpu"
    count = cpu.get("count")
    return f"{brand}" + (f" x{count}" if count else "")


def _number(value: Any, where: str, *, zero: bool = False) -> float:
    """A time in seconds, > 0: compared on a log scale, so zero or a negative time is refused, not compared as NaN;
    with ``zero``, a spread (>= 0)."""
    if not is_real(value) or not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        raise BenchFileError(f"{where}: expected a finite number {'>= 0' if zero else 'of seconds > 0'}, got {value!r}")
    return float(value)


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    """An optional object of the file (absent or null: empty)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise BenchFileError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def parse_benchmark_json(path: Path) -> BenchRun:
    """Read one pytest-benchmark ``--benchmark-json`` file. Raises BenchFileError with the file and field."""
    try:
        raw = path.read_bytes()
        data = json.loads(raw)
    except OSError as exc:
        raise BenchFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BenchFileError(f"{path}: not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise BenchFileError(f"{path}: benchmarks: missing; is this a pytest-benchmark --benchmark-json file?")
    commit = _mapping(data.get("commit_info"), f"{path}: commit_info")
    machine = _mapping(data.get("machine_info"), f"{path}: machine_info")
    _mapping(machine.get("cpu"), f"{path}: machine_info.cpu")
    kernels: list[KernelRun] = []
    seen: dict[str, int] = {}
    for index, bench in enumerate(data["benchmarks"]):
        where = f"{path}: benchmarks[{index}]"
        if not isinstance(bench, dict) or not isinstance(bench.get("stats"), dict):
            raise BenchFileError(f"{where}.stats: missing")
        kernel = bench.get("fullname") or bench.get("name")
        if not isinstance(kernel, str) or not kernel:
            raise BenchFileError(f"{where}.fullname: missing")
        if kernel in seen:
            raise BenchFileError(f"{where}.fullname: {kernel!r} again (benchmarks[{seen[kernel]}] has it)")
        seen[kernel] = index
        stats = bench["stats"]
        median = _number(stats.get("median"), f"{where}.stats.median")
        # Every round needs --benchmark-save-data; without it the median stands in as the run's only round.
        rounds_raw = stats.get("data")
        rounds = (
            tuple(_number(v, f"{where}.stats.data[{i}]") for i, v in enumerate(rounds_raw))
            if isinstance(rounds_raw, list) and rounds_raw
            else (median,)
        )
        kernels.append(
            KernelRun(
                kernel=kernel,
                name=str(bench.get("name") or kernel),
                group=bench.get("group"),
                params=_mapping(bench.get("params"), f"{where}.params"),
                rounds=rounds,
                median=median,
                minimum=_number(stats.get("min", median), f"{where}.stats.min"),
                mean=_number(stats.get("mean", median), f"{where}.stats.mean"),
                iqr=None if stats.get("iqr") is None else _number(stats["iqr"], f"{where}.stats.iqr", zero=True),
                extra_info=_mapping(bench.get("extra_info"), f"{where}.extra_info"),
            )
        )
    dirty = bool(commit.get("dirty"))
    return BenchRun(
        run_id=hashlib.sha256(raw).hexdigest()[:32],
        recorded_at=str(data.get("datetime") or ""),
        git_rev=commit.get("id") or None,
        commit_time=commit.get("time") or commit.get("author_time") or None,
        dirty=dirty,
        machine=_machine(machine),
        source=str(path),
        kernels=tuple(kernels),
    )


class BenchStore:
    """Benchmark runs in their own tables of the history database (WAL, one transaction per run)."""

    def __init__(self, path: Path | str) -> None:
        from reprolab.claims.history import History

        self.path = Path(path)
        # the claims history's rule for a damaged file (moved aside, a fresh one started, ``recovered`` says so)
        # and for one that cannot be reached (HistoryUnavailable)
        self._history = History(self.path)

    @property
    def recovered(self) -> str | None:
        return self._history.recovered

    def _connect(self) -> sqlite3.Connection:
        from reprolab.claims.history import open_database

        return open_database(self.path, _SCHEMA)

    def record(self, run: BenchRun) -> bool:
        """Store ``run``; False when the same file was recorded before (nothing written)."""
        return self._history.guarded(lambda: self._record(run))

    def _record(self, run: BenchRun) -> bool:
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                if db.execute("SELECT 1 FROM bench_runs WHERE run_id = ?", (run.run_id,)).fetchone():
                    db.execute("ROLLBACK")
                    return False
                db.execute(
                    "INSERT INTO bench_runs VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (run.run_id, run.recorded_at, run.git_rev, run.commit_time, int(run.dirty), run.machine,
                     run.source),
                )
                db.executemany(
                    "INSERT INTO bench_kernels VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (run.run_id, k.kernel, k.name, k.group, json.dumps(k.params, default=str),
                         json.dumps(list(k.rounds)), k.median, k.minimum, k.mean, k.iqr,
                         json.dumps(k.extra_info, default=str))
                        for k in run.kernels
                    ],
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return True

    def runs(self) -> list[BenchRun]:
        """Every stored run with its kernels, oldest first (by the time pytest-benchmark recorded it)."""
        return self._history.guarded(self._runs)

    def _runs(self) -> list[BenchRun]:
        from reprolab.claims.history import open_to_read

        if not self.path.exists():
            return []
        with closing(open_to_read(self.path, _SCHEMA)) as db:
            db.row_factory = sqlite3.Row
            try:
                run_rows = db.execute("SELECT * FROM bench_runs ORDER BY recorded_at, run_id").fetchall()
                kernel_rows = db.execute("SELECT * FROM bench_kernels ORDER BY kernel").fetchall()
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):  # opened read-only, before any benchmark run was recorded
                    return []
                raise
        by_run: dict[str, list[KernelRun]] = {}
        for row in kernel_rows:
            by_run.setdefault(row["run_id"], []).append(
                KernelRun(
                    kernel=row["kernel"],
                    name=row["name"],
                    group=row["grp"],
                    params=json.loads(row["params"]),
                    rounds=tuple(json.loads(row["rounds"])),
                    median=row["median"],
                    minimum=row["min"],
                    mean=row["mean"],
                    iqr=row["iqr"],
                    extra_info=json.loads(row["extra_info"]),
                )
            )
        return [
            BenchRun(
                run_id=row["run_id"],
                recorded_at=row["recorded_at"],
                git_rev=row["git_rev"],
                commit_time=row["commit_time"],
                dirty=bool(row["dirty"]),
                machine=row["machine"],
                source=row["source"],
                kernels=tuple(by_run.get(row["run_id"], [])),
            )
            for row in run_rows
        ]


def record_files(store: BenchStore, paths: Iterable[Path]) -> list[tuple[Path, BenchRun, bool]]:
    """Parse every file first (one bad file stores nothing), then record each; (path, run, newly stored)."""
    parsed = [(path, parse_benchmark_json(path)) for path in paths]
    return [(path, run, store.record(run)) for path, run in parsed]
