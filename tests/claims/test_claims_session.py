"""An outside lab's project through ClaimSession, the CLI and pytest; faults isolated; integrity of state."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from labproject import SOURCE, build_lab, claim

from reprolab.claims.project import find_project
from reprolab.claims.session import ClaimSession
from reprolab.cli import cli

ROOT = Path(__file__).resolve().parents[2]


def _verdicts(report: Path) -> dict[str, str]:
    return {c["id"]: c["verdict"] for c in json.loads(report.read_text())["claims"]}


def _session(root: Path, **options) -> ClaimSession:  # type: ignore[no-untyped-def]
    return ClaimSession(find_project(root), **options)


def test_outside_project_same_verdicts_through_cli_and_pytest(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = build_lab(pytester.path)
    (root / "tests" / "expectations").mkdir(parents=True)  # an unrelated YAML folder: never collected
    (root / "tests" / "expectations" / "golden.yaml").write_text("just: data\n")
    monkeypatch.chdir(root)
    result = CliRunner().invoke(cli, ["check"])
    assert result.exit_code == 0, result.output
    cli_verdicts = _verdicts(root / "reports" / "latest.json")
    assert cli_verdicts == {"ece-small": "reproduced", "plain-ref": "reproduced"}

    outcome = pytester.runpytest("-p", "no:cacheprovider", "--reprolab-reports", "pytest-reports")
    outcome.assert_outcomes(passed=2)
    assert _verdicts(root / "pytest-reports" / "latest.json") == cli_verdicts


def test_editing_the_labs_code_invalidates_exactly_its_results(tmp_path: Path) -> None:
    root = build_lab(tmp_path)
    with _session(root) as session:
        claims = session.select().claims
        first = session.run(claims)
        again = session.run(claims)
    assert [r.verdict for r in first] == ["reproduced", "reproduced"]
    assert [r.cached_tasks for r in again] == [1, 1]
    (root / "mylab" / "unused.py").write_text("VALUE = 2\n")  # imported by nothing: moves nothing
    with _session(root) as session:
        assert [r.cached_tasks for r in session.run(session.select().claims)] == [1, 1]
    (root / "mylab" / "helpers.py").write_text("OFFSET = 0.5\n")  # a bug in a helper the experiment imports
    with _session(root) as session:
        ece, plain = session.run(session.select().claims)
    assert ece.cached_tasks == 0 and ece.verdict == "not-reproduced" and not ece.matches
    assert plain.cached_tasks == 0  # mylab.calib:plain lives in the module that imports helpers: it can move


FAULTS = (
    SOURCE
    + "".join(
        claim(f"fault-{name}", f"faults.{name}", "x", "at_least: 0", "reproduced", extra)
        for name, extra in [
            ("exit", ""),
            ("segfault", ""),
            ("sysexit", ""),
            ("hang", "timeout_s: 2\n"),
            ("missing", ""),
            ("pairs", ""),
            ("interrupt", ""),
        ]
    )
    + claim("fault-import", "broken.never", "x", "at_least: 0", "reproduced")
    + claim("healthy", "calib.ece", "ece", "at_most: 0.05", "reproduced", "seeds: 3\n")
)


@pytest.mark.parametrize("workers", [1, 2])
def test_each_fault_is_one_error_naming_its_cause_and_siblings_finish(tmp_path: Path, workers: int) -> None:
    root = build_lab(tmp_path, FAULTS)
    # under xdist this process may already hold the plugin's own experiment worker (a claim item ran here before;
    # it lives until pytest ends): only the workers this run starts must be gone after it
    before = set(multiprocessing.active_children())
    with _session(root, workers=workers) as session:
        selection = session.select()
        assert selection.errors == []
        results = {r.id: r for r in session.run(selection.claims)}
    assert not set(multiprocessing.active_children()) - before  # no worker of this run outlives it
    causes = {
        "fault-exit": "exited with status 3",
        "fault-segfault": "SIGSEGV",
        "fault-sysexit": "sys.exit(4)",
        "fault-hang": "timed out after 2 s",
        "fault-missing": "pip install nosuchpkg_for_reprolab_tests",
        "fault-import": "cannot import mylab.broken: RuntimeError: broken at import",
        "fault-pairs": "returned list, expected a dict of floats",
        "fault-interrupt": "the experiment raised KeyboardInterrupt",  # the task's error; the worker lives on
    }
    for claim_id, cause in causes.items():
        assert results[claim_id].verdict == "error", (claim_id, results[claim_id].message)
        assert cause in results[claim_id].message, (claim_id, results[claim_id].message)
        assert "\n" not in results[claim_id].message
    assert results["healthy"].verdict == "reproduced" and results["healthy"].n_seeds == 3


def test_an_experiments_prints_go_to_stderr_not_into_the_ledger(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = build_lab(tmp_path, SOURCE + claim("chatty", "faults.chatty", "x", "at_least: 0.5", "reproduced"))
    r = subprocess.run([sys.executable, "-m", "reprolab.cli", "check"], cwd=root, capture_output=True, text=True,
                       timeout=300, env={**os.environ, "PYTHONPATH": str(root)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "CHATTY EXPERIMENT OUTPUT" in r.stderr and "CHATTY" not in r.stdout  # stdout: the ledger alone


def test_missing_extra_names_the_pip_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "fake"
    (fake / "jax").mkdir(parents=True)
    (fake / "jax" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'jax'\", name='jax')\n"
    )
    monkeypatch.syspath_prepend(str(fake))  # the workers inherit sys.path: jax "is not installed" there
    text = SOURCE + claim(
        "needs-jax", "clustering.overcluster_then_merge", "raw_nmi", "at_least: 0", "reproduced"
    )
    root = build_lab(tmp_path / "lab", text)
    with _session(root) as session:
        [result] = session.run(session.select().claims)
    assert result.verdict == "error"
    assert 'pip install "reprolab[clustering]"' in result.message and "'jax'" in result.message


def test_workers_die_with_a_killed_run(tmp_path: Path) -> None:
    root = build_lab(tmp_path, SOURCE + claim("hangs", "faults.hang", "x", "at_least: 0", "reproduced"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "reprolab.cli", "check"], cwd=root, env=env)
    children: list[int] = []
    deadline = time.time() + 60
    while not children and time.time() < deadline:
        time.sleep(0.2)
        children = _children(proc.pid)
    assert children, "no worker started"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.time() + 10
    while any(_alive(pid) for pid in children) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in children)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# --- integrity of the state folder ---------------------------------------------------------------------------


def test_tampered_or_mistyped_cache_entry_is_recomputed_with_a_warning(tmp_path: Path) -> None:
    root = build_lab(tmp_path)
    with _session(root) as session:
        session.run(session.select().claims)
    entries = sorted((root / ".reprolab" / "cache").rglob("*.json"))
    assert len(entries) == 2
    assert all(stat.S_IMODE(e.stat().st_mode) == 0o666 & ~_umask() for e in entries)
    tampered, mistyped = entries
    entry = json.loads(tampered.read_text())
    entry["metrics"] = {name: value + 1.0 for name, value in entry["metrics"].items()}
    tampered.write_text(json.dumps(entry))
    entry = json.loads(mistyped.read_text())
    entry["metrics"] = {name: "oops" for name in entry["metrics"]}
    mistyped.write_text(json.dumps(entry))
    with _session(root) as session:
        results = session.run(session.select().claims)
        problems = session.cache.problems
    assert [r.verdict for r in results] == ["reproduced", "reproduced"]
    assert [r.cached_tasks for r in results] == [0, 0]
    assert any("checksum mismatch" in p for p in problems) and any("not a number" in p for p in problems)
    assert all(any("recomputing" in w for w in r.warnings) for r in results)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def test_corrupt_history_is_moved_aside_and_reports_still_written(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    root = build_lab(tmp_path)
    history = root / ".reprolab" / "history.sqlite"
    history.parent.mkdir(parents=True)
    history.write_bytes(b"this is not a database" * 100)
    monkeypatch.chdir(root)
    result = CliRunner().invoke(cli, ["check"])
    assert result.exit_code == 0, result.output
    assert "moved it to history.sqlite.corrupt-" in " ".join(result.output.split())
    assert (root / "reports" / "latest.json").exists()
    assert list(history.parent.glob("history.sqlite.corrupt-*"))
    with sqlite3.connect(history) as db:
        assert db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 1


def test_two_recoveries_in_one_second_keep_both_damaged_copies(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    import reprolab.claims.history as history_module

    class Frozen(datetime):  # both recoveries in the same second, as a fast pair of runs can be
        @classmethod
        def now(cls, tz=None):  # type: ignore[no-untyped-def,override]
            return datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)

    monkeypatch.setattr(history_module, "datetime", Frozen)
    path = tmp_path / "history.sqlite"
    for junk in (b"first damaged copy", b"second damaged copy"):
        path.write_bytes(junk * 100)
        history_module.History(path).latest()  # moved aside: the second copy must not replace the first
        path.unlink(missing_ok=True)
    copies = sorted(p.read_bytes()[:12] for p in tmp_path.glob("history.sqlite.corrupt-*"))
    assert copies == [b"first damage", b"second damag"], copies


def test_update_verdicts_keeps_the_file_mode(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    root = build_lab(tmp_path)
    path = root / "claims" / "calib.yaml"
    path.write_text(path.read_text().replace("verdict: reproduced", "verdict: refuted", 1))
    path.chmod(0o640)
    monkeypatch.chdir(root)
    assert CliRunner().invoke(cli, ["check", "--update-verdicts"]).exit_code == 1
    assert "verdict: refuted" not in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_warm_keys_import_no_experiment_module(tmp_path: Path) -> None:
    """Cache keys are static: with a warm cache, nothing the lab wrote (nor torch/JAX) is imported."""
    root = build_lab(tmp_path)
    with _session(root) as session:
        session.run(session.select().claims)
    assert "mylab.calib" not in sys.modules and "mylab" not in sys.modules
    script = (
        "import sys; from reprolab.claims.session import ClaimSession;"
        "s = ClaimSession(); c = s.select(marker='fast').claims;"
        "from reprolab.claims.runner import claim_tasks;"
        "[claim_tasks(x, project_root=s.project.root) for x in c];"
        "heavy = [m for m in ('torch', 'jax', 'scipy', 'sklearn') if m in sys.modules];"
        "assert len(c) > 100 and not heavy, heavy"
    )
    subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )


def test_short_names_from_an_entry_point(tmp_path: Path) -> None:
    from reprolab.claims.resolve import entry_point_modules

    root = build_lab(tmp_path)
    pyproject = root / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace('experiments = ["mylab.calib", "mylab.faults", "mylab.broken"]\n', "")
    )
    with _session(root) as session:
        entry_point_modules.cache_clear()
        assert "calib.ece" in str(session.select().errors[0])  # not listed anywhere: unknown
    info = root / "mylab-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mylab\nVersion: 0\n")
    (info / "entry_points.txt").write_text("[reprolab.experiments]\nmylab = mylab.calib\n")
    entry_point_modules.cache_clear()
    try:
        with _session(root) as session:
            selection = session.select()
            assert selection.errors == []
            assert [r.verdict for r in session.run(selection.claims)] == ["reproduced", "reproduced"]
    finally:
        entry_point_modules.cache_clear()


def test_reports_that_cannot_be_written_are_one_line_and_the_run_still_counts(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    root = build_lab(tmp_path)
    (root / "reports").write_text("the lab's own file\n")  # where the reports folder would go
    monkeypatch.chdir(root)
    result = CliRunner().invoke(cli, ["check"])
    assert result.exit_code == 0 and result.exception is None, result.output
    output = " ".join(result.output.split())
    assert f"warning reports not written to {root / 'reports'} (File exists" in output
    assert (root / "reports").read_text() == "the lab's own file\n"
    with sqlite3.connect(root / ".reprolab" / "history.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 1
    rebuilt = CliRunner().invoke(cli, ["report"])
    assert rebuilt.exit_code == 1 and isinstance(rebuilt.exception, SystemExit), rebuilt.output
    assert "Error: reports not written to" in rebuilt.output


def test_a_history_that_cannot_be_opened_is_left_alone_not_moved_aside(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Only a damaged file is moved aside; one that cannot be reached (here a folder of the lab's in its place;
    a read-only checkout or another user's file alike) stays where it is, and the commands say so in one line."""
    root = build_lab(tmp_path)
    history = root / ".reprolab" / "history.sqlite"
    history.mkdir(parents=True)
    (history / "keep.txt").write_text("mine\n")
    monkeypatch.chdir(root)
    checked = CliRunner().invoke(cli, ["check"])
    assert checked.exit_code == 0, checked.output
    assert f"history not updated (HistoryUnavailable: history {history} cannot be used" in " ".join(
        checked.output.split()
    )
    for command in (["list"], ["history", "ece-small"], ["report"]):
        result = CliRunner().invoke(cli, command)
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), (command, result.output)
        assert f"Error: history {history} cannot be used" in " ".join(result.output.split())
    assert (history / "keep.txt").read_text() == "mine\n"
    assert not list(history.parent.glob("history.sqlite.corrupt-*"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through file modes")
def test_a_read_only_history_is_read_and_kept(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    root = build_lab(tmp_path)
    monkeypatch.chdir(root)
    assert CliRunner().invoke(cli, ["check"]).exit_code == 0
    state = root / ".reprolab"
    (state / "history.sqlite").chmod(0o444)
    state.chmod(0o555)
    try:
        listed = CliRunner().invoke(cli, ["list"])
        assert listed.exit_code == 0 and "reproduced (" in listed.output, listed.output
        assert CliRunner().invoke(cli, ["history", "ece-small"]).exit_code == 0
        again = CliRunner().invoke(cli, ["check"])
        assert again.exit_code == 0 and "history not updated (HistoryUnavailable" in again.output
        assert not list(state.glob("history.sqlite.corrupt-*"))
    finally:
        state.chmod(0o755)


def test_a_cache_that_cannot_be_written_is_one_warning_and_the_run_completes(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    root = build_lab(tmp_path)
    (root / ".reprolab").mkdir()
    (root / ".reprolab" / "cache").write_text("not a folder\n")  # as a read-only checkout refuses the mkdir
    monkeypatch.chdir(root)
    result = CliRunner().invoke(cli, ["check"])
    assert result.exit_code == 0 and result.exception is None, result.output
    output = " ".join(result.output.split())
    assert output.count(f"warning cache {root / '.reprolab' / 'cache'} not written (") == 1
    assert "2 claims: 2 reproduced" in output
