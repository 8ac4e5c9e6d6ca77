"""Runner, cache and history: errors isolated, results cached atomically, parallel equals serial."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from claimfiles import claim_yaml, write_claims

from reprolab.claims.cache import ResultCache
from reprolab.claims.history import History, RunInfo
from reprolab.claims.loader import load_claims
from reprolab.claims.runner import run_claims

NOISY = "{metric: value, statistic: iqm, at_least: -10, interval: ci95, why: test}"


def _noisy(claim_id: str, seeds: int = 6) -> str:
    return claim_yaml(
        claim_id, experiment="selftest.noisy", config="{loc: 1.0}", expect=NOISY, extra=f"seeds: {seeds}\n"
    )


def test_failing_experiment_is_an_error_verdict_and_others_run(expectations: Path, tmp_path: Path) -> None:
    write_claims(
        expectations,
        "a.yaml",
        claim_yaml("boom", experiment="selftest.fails", config="{}"),
        claim_yaml("fine"),
        claim_yaml("nan", experiment="selftest.nan", config="{nan_seed: 0}"),
        claim_yaml(
            "missing-metric",
            experiment="selftest.undeclared",
            expect="{metric: nmi, statistic: mean, at_least: 0, why: w}",
        ),
    )
    claims, errors = load_claims([expectations])
    assert errors == []
    results = {r.id: r for r in run_claims(claims, ResultCache(tmp_path / "cache"))}
    assert results["boom"].verdict == "error" and "raised on purpose" in (results["boom"].traceback or "")
    assert results["fine"].verdict == "reproduced" and results["fine"].matches
    assert results["nan"].verdict == "error" and "seed 0" in results["nan"].message
    missing = results["missing-metric"]
    assert missing.verdict == "error" and "expect.metric" in missing.message and "a.yaml:" in missing.message


def test_cache_hits_and_parallel_equals_serial(expectations: Path, tmp_path: Path) -> None:
    write_claims(expectations, "a.yaml", _noisy("n1"), _noisy("n2", seeds=3))
    claims, _ = load_claims([expectations])
    serial = run_claims(claims, ResultCache(tmp_path / "serial"))
    parallel = run_claims(claims, ResultCache(tmp_path / "parallel"), workers=2)
    assert [r.values for r in serial] == [r.values for r in parallel]
    assert [r.ci for r in serial] == [r.ci for r in parallel]
    again = run_claims(claims, ResultCache(tmp_path / "serial"))
    assert [r.cached_tasks for r in again] == [6, 3]
    assert [r.values for r in again] == [r.values for r in serial]
    # n2's seeds are n1's first three: the same runs, shared rather than recomputed
    assert serial[1].values[""] == serial[0].values[""][:3]


def test_corrupt_cache_entry_is_a_miss(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path)
    cache.put("selftest.constant", "ab" * 32, {"value": 1.0}, config={}, seed=0, seconds=0.0)
    assert cache.get("selftest.constant", "ab" * 32) == {"value": 1.0}
    path = next(tmp_path.rglob("*.json"))
    path.write_text('{"metrics": ')
    assert cache.get("selftest.constant", "ab" * 32) is None


def test_history_concurrent_writers(tmp_path: Path) -> None:
    db = tmp_path / "history.sqlite"
    script = (
        "import sys; from reprolab.claims.history import History, RunInfo;"
        "from reprolab.claims.runner import ClaimResult;"
        "h = History(sys.argv[1]);"
        "[h.record(RunInfo.current('t'), [ClaimResult(id=f'c{i}', file='f', line=1, document='d', kind='recorded',"
        " scale='fast', statement='s', quote='q', expected='e', why='w', metric='m', statistic='mean',"
        " interval='point', bounds=(0.0, 1.0), recorded='reproduced', verdict='reproduced', observed=0.5)])"
        " for i in range(20)]"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(db)]) for _ in range(3)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 60
        assert conn.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 60
    assert len(History(db).claim_history("c3")) == 3


def test_killed_run_leaves_cache_and_history_readable(expectations: Path, tmp_path: Path) -> None:
    """Kill `reprolab check` while a slow experiment runs: what it left must still load and be reused."""
    write_claims(expectations, "a.yaml", claim_yaml("quick"))
    History(tmp_path / ".reprolab" / "history.sqlite").record(RunInfo.current("seed"), [])
    write_claims(
        expectations,
        "b.yaml",
        claim_yaml(
            "slow", experiment="selftest.sleep", config="{seconds: 60}", expect=NOISY, extra="seeds: 2\n"
        ),
    )
    (tmp_path / "pyproject.toml").write_text("")
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, "-m", "reprolab.cli", "check"], cwd=tmp_path, env=env)
    cache_dir = tmp_path / ".reprolab" / "cache" / "selftest.constant"
    deadline = time.time() + 60
    while not any(cache_dir.rglob("*.json")) and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    # a write cut short can leave only a *.partial temp file, which is never read as an entry
    for entry in (tmp_path / ".reprolab" / "cache").rglob("*.json"):
        json.loads(entry.read_text())
    with sqlite3.connect(tmp_path / ".reprolab" / "history.sqlite") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 1  # the killed run wrote nothing
    (expectations / "b.yaml").unlink()
    claims, _ = load_claims([expectations])
    [result] = run_claims(claims, ResultCache(tmp_path / ".reprolab" / "cache"))
    assert result.cached_tasks == 1 and result.matches


def test_code_version_follows_imports_statically() -> None:
    from reprolab.claims.cache import _imported_modules, code_version

    source = Path(__file__).resolve().parents[2] / "reprolab" / "experiments" / "recorded.py"
    imported = _imported_modules("reprolab.experiments.recorded", source)
    assert "reprolab.experiments.registry" in imported
    assert code_version("reprolab.experiments.recorded") == code_version("reprolab.experiments.recorded")
    assert code_version("reprolab.experiments.recorded") != code_version("reprolab.experiments.selftest")
