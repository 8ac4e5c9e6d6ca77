"""The history database: every checked claim of every run, in SQLite under ``.reprolab/history.sqlite``.

WAL journaling plus a generous busy timeout make concurrent writers (two pytest-xdist workers, a CLI run
beside a test run) wait for each other instead of failing; each run is written in one transaction, so a run
killed midway leaves the database as it was before that run. A file that is not a readable history (damaged,
overwritten) is moved aside to ``history.sqlite.corrupt-<time>`` with a message in ``recovered``, and a new
history is started: losing the trend lines is better than losing the run. A file that cannot be reached (a
read-only checkout, another user's file, a lock held too long) is never moved aside: it is read read-only, and a
write fails with :class:`HistoryUnavailable` naming it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from collections.abc import Callable, Iterable
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from reprolab.claims.environment import git_revision, machine_description, package_versions
from reprolab.claims.runner import ClaimResult

_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    started_at TEXT NOT NULL,
    git_rev TEXT,
    versions TEXT NOT NULL,
    machine TEXT NOT NULL,
    command TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    claim_id TEXT NOT NULL,
    file TEXT NOT NULL,
    document TEXT NOT NULL,
    recorded TEXT NOT NULL,
    verdict TEXT NOT NULL,
    observed REAL,
    ci_low REAL,
    ci_high REAL,
    n_seeds INTEGER NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (run_id, claim_id)
);
CREATE INDEX IF NOT EXISTS results_by_claim ON results(claim_id);
"""


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    started_at: str
    git_rev: str | None
    versions: dict[str, str]
    machine: str
    command: str

    @classmethod
    def current(cls, command: str, cwd: Path | None = None) -> RunInfo:
        return cls(
            run_id=uuid.uuid4().hex,
            started_at=datetime.now(UTC).isoformat(timespec="seconds"),
            git_rev=git_revision(cwd),
            versions=package_versions(),
            machine=machine_description(),
            command=command,
        )


def open_database(path: Path, schema: str) -> sqlite3.Connection:
    """The history database at ``path`` (WAL, busy timeout: safe for concurrent writers), ``schema`` applied."""
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=60.0, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA busy_timeout=60000")
    connection.executescript(schema)
    return connection


def open_to_read(path: Path, schema: str) -> sqlite3.Connection:
    """For reading: :func:`open_database`, else, where the file cannot be written (a read-only checkout, another
    user's file), the file opened read-only (its tables as they are), so list, history and report still read it."""
    try:
        return open_database(path, schema)
    except sqlite3.OperationalError as exc:
        if not _access_problem(exc) or "locked" in str(exc) or not path.is_file():
            raise
    uri = path.resolve().as_uri()
    try:
        db = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=60.0)
        db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        return db
    except sqlite3.OperationalError:  # a WAL database on a read-only filesystem, where no -shm can be made
        return sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True)


# Errors that say the file cannot be reached now (read-only, permissions, locked, disk), not that it is damaged:
# such a history is left where it is, never moved aside.
_ACCESS_ERRORS = (
    "SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_PERM", "SQLITE_AUTH", "SQLITE_BUSY", "SQLITE_LOCKED",
    "SQLITE_IOERR", "SQLITE_FULL",
)


class HistoryUnavailable(RuntimeError):
    """The history cannot be opened or written (a read-only checkout, a lock held too long); ``str()`` names it."""


def _access_problem(exc: sqlite3.Error) -> bool:
    name = getattr(exc, "sqlite_errorname", None) or ""
    return name.startswith(_ACCESS_ERRORS) or "locked" in str(exc)


class History:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.recovered: str | None = None  # set when a damaged file was moved aside

    def guarded(self, operation: Callable[[], _T]) -> _T:
        """Run ``operation``; on a damaged database move it aside and run it once more on a fresh one. A history
        that cannot be reached (read-only, locked) is left alone: HistoryUnavailable naming it."""
        try:
            return operation()
        except sqlite3.DatabaseError as exc:
            if _access_problem(exc):
                raise HistoryUnavailable(f"history {self.path} cannot be used: {exc}") from None
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
            n = 1
            while aside.exists() or aside.is_symlink():  # two recoveries in one second: never replace the first copy
                n += 1
                aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
            os.replace(self.path, aside)
            for suffix in ("-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            self.recovered = (
                f"history {self.path} was unreadable ({exc}); moved it to {aside.name} and started a new one"
            )
            return operation()

    def _connect(self) -> sqlite3.Connection:
        return open_database(self.path, _SCHEMA)

    def _connect_to_read(self) -> sqlite3.Connection:
        return open_to_read(self.path, _SCHEMA)

    def record(self, run: RunInfo, results: Iterable[ClaimResult]) -> None:
        results = list(results)
        self.guarded(lambda: self._record(run, results))

    def _record(self, run: RunInfo, results: list[ClaimResult]) -> None:
        rows = [
            (
                run.run_id,
                r.id,
                r.file,
                r.document,
                r.recorded,
                r.verdict,
                r.observed,
                r.ci[0] if r.ci else None,
                r.ci[1] if r.ci else None,
                r.n_seeds,
                json.dumps(r.to_dict(), default=str),
            )
            for r in results
        ]
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(
                    "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        run.run_id,
                        run.started_at,
                        run.git_rev,
                        json.dumps(run.versions),
                        run.machine,
                        run.command,
                    ),
                )
                db.executemany(
                    "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def claim_history(self, claim_id: str, limit: int = 50) -> list[dict[str, Any]]:
        """Newest first: when, revision, verdict, observed, CI for one claim."""
        return self.guarded(lambda: self._claim_history(claim_id, limit))

    def latest(self, since: str | None = None) -> dict[str, dict[str, Any]]:
        """The newest stored result of every claim (optionally only runs started at or after ``since``), with
        its ``guards`` (the valid_when outcomes), as :meth:`claim_history` gives them."""
        return self.guarded(lambda: self._latest(since))

    def verdict_series(self, since: str | None = None) -> dict[str, list[tuple[str, str, str | None]]]:
        """Per claim, (started_at, verdict, git_rev) of every run, oldest first."""
        return self.guarded(lambda: self._verdict_series(since))

    def _claim_history(self, claim_id: str, limit: int) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with closing(self._connect_to_read()) as db:
            db.row_factory = sqlite3.Row
            rows = db.execute(
                """SELECT runs.started_at, runs.git_rev, runs.machine, results.* FROM results
                   JOIN runs USING (run_id) WHERE claim_id = ? ORDER BY runs.started_at DESC LIMIT ?""",
                (claim_id, limit),
            ).fetchall()
        return [_with_guards(dict(row)) for row in rows]

    def _latest(self, since: str | None) -> dict[str, dict[str, Any]]:
        if not self.path.exists():
            return {}
        with closing(self._connect_to_read()) as db:
            db.row_factory = sqlite3.Row
            rows = db.execute(
                """SELECT runs.started_at, runs.git_rev, results.* FROM results JOIN runs USING (run_id)
                   WHERE runs.started_at >= ? ORDER BY runs.started_at""",
                (since or "",),
            ).fetchall()
        return {row["claim_id"]: _with_guards(dict(row)) for row in rows}

    def _verdict_series(self, since: str | None) -> dict[str, list[tuple[str, str, str | None]]]:
        if not self.path.exists():
            return {}
        with closing(self._connect_to_read()) as db:
            rows = db.execute(
                """SELECT results.claim_id, runs.started_at, results.verdict, runs.git_rev FROM results
                   JOIN runs USING (run_id) WHERE runs.started_at >= ? ORDER BY runs.started_at""",
                (since or "",),
            ).fetchall()
        series: dict[str, list[tuple[str, str, str | None]]] = {}
        for claim_id, started_at, verdict, rev in rows:
            series.setdefault(claim_id, []).append((started_at, verdict, rev))
        return series

    def observed_series(self, since: str | None = None) -> dict[str, list[dict[str, Any]]]:
        """Per claim, every run's observed statistic, oldest first: started_at, git_rev, verdict, observed, CI."""
        if not self.path.exists():
            return {}
        with closing(self._connect_to_read()) as db:
            rows = db.execute(
                """SELECT results.claim_id, runs.started_at, runs.git_rev, results.verdict, results.observed,
                          results.ci_low, results.ci_high FROM results JOIN runs USING (run_id)
                   WHERE runs.started_at >= ? ORDER BY runs.started_at""",
                (since or "",),
            ).fetchall()
        series: dict[str, list[dict[str, Any]]] = {}
        for claim_id, started_at, rev, verdict, observed, ci_low, ci_high in rows:
            series.setdefault(claim_id, []).append(
                {"started_at": started_at, "git_rev": rev, "verdict": verdict, "observed": observed,
                 "ci": None if ci_low is None else [ci_low, ci_high]}
            )
        return series


def _with_guards(row: dict[str, Any]) -> dict[str, Any]:
    """Lift the run's guard outcomes (valid_when) out of the stored payload, so a reader can name them."""
    try:
        row["guards"] = json.loads(row["payload"]).get("guards") or []
    except (TypeError, ValueError, AttributeError):
        row["guards"] = []
    return row
