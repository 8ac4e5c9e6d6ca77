"""``reprolab bench record / compare`` on pytest-benchmark JSON files, and the report's benchmarks page."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from reprolab.bench.store import BenchStore
from reprolab.claims.history import History, RunInfo
from reprolab.claims.report import write_reports
from reprolab.cli import cli

pytestmark = pytest.mark.fast

KERNELS = ("test_nmi[reprolab]", "test_nmi[sklearn]", "test_merge", "test_bench_reference_kernel")
CONFIG = """reference: test_bench_reference_kernel
kernels:
  - match: "test_nmi[reprolab]"
    peer: {name: scikit-learn, kernel: "test_nmi[sklearn]"}
    target: "at least as fast as scikit-learn"
  - match: test_merge
    target_seconds: 0.05
    target: "under 50 ms"
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "kernels.yaml").write_text(CONFIG)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _write_run(directory: Path, index: int, rng: np.random.Generator, slow: str | None = None) -> Path:
    benchmarks = []
    machine = 1 + rng.uniform(-0.15, 0.15)
    for position, name in enumerate(KERNELS):
        factor = machine * (1 + rng.uniform(-0.07, 0.07)) * (1.5 if name == slow else 1.0)
        data = [0.01 * (position + 1) * factor * (1 + 0.02 * e) for e in rng.standard_normal(7)]
        benchmarks.append({
            "name": name, "fullname": f"benchmarks/test_k.py::{name}", "group": None, "params": None,
            "extra_info": {}, "stats": {"min": min(data), "max": max(data), "mean": float(np.mean(data)),
                                        "median": float(np.median(data)), "iqr": 0.0, "rounds": 7, "data": data},
        })
    payload = {
        "machine_info": {"node": "host", "cpu": {"brand_raw": "cpu", "count": 2}},
        "commit_info": {"id": f"{index:02d}abcdef" + "0" * 32, "time": f"2026-01-{index + 1:02d}", "dirty": False},
        "benchmarks": benchmarks, "datetime": f"2026-01-{index + 1:02d}T00:00:00", "version": "5.3.1",
    }
    path = directory / f"run{index}.json"
    path.write_text(json.dumps(payload))
    return path


def _record_series(project: Path, slow_last: str | None) -> CliRunner:
    rng = np.random.default_rng(5)
    runner = CliRunner()
    files = [_write_run(project, i, rng, slow=slow_last if i == 15 else None) for i in range(16)]
    result = runner.invoke(cli, ["bench", "record", *map(str, files)])
    assert result.exit_code == 0, result.output
    assert result.output.count("recorded:") == 16
    return runner


def test_record_is_idempotent_and_compare_stays_quiet_on_jitter(project: Path) -> None:
    runner = _record_series(project, slow_last=None)
    again = runner.invoke(cli, ["bench", "record", str(project / "run0.json")])
    assert "already recorded" in again.output
    assert len(BenchStore(project / ".reprolab" / "history.sqlite").runs()) == 16
    result = runner.invoke(cli, ["bench", "compare", "--fail-on-regression"])
    assert result.exit_code == 0, result.output
    assert result.output.count("same ") == len(KERNELS) and "regressed" not in result.output


def test_compare_fails_naming_the_regressed_kernel_only(project: Path) -> None:
    runner = _record_series(project, slow_last="test_merge")
    result = runner.invoke(cli, ["bench", "compare", "--fail-on-regression"])
    assert result.exit_code == 1, result.output
    assert "regressed: benchmarks/test_k.py::test_merge" in result.output
    slower = [line for line in result.output.splitlines() if line.startswith("slower")]
    assert len(slower) == 1 and "test_merge" in slower[0] and "step at 15abcdef00, 1 run(s) since" in slower[0]
    factor = float(re.search(r"(\d+\.\d+)x", slower[0]).group(1))
    assert 1.3 < factor < 1.8
    assert runner.invoke(cli, ["bench", "compare"]).exit_code == 0  # without the flag it only reports


def test_bad_file_is_one_line_naming_the_field(project: Path) -> None:
    bad = project / "bad.json"
    bad.write_text(json.dumps({"benchmarks": [{"name": "x", "fullname": "x", "stats": {"median": "fast"}}]}))
    result = CliRunner().invoke(cli, ["bench", "record", str(bad)])
    assert result.exit_code == 1
    assert "bad.json: benchmarks[0].stats.median: expected a finite number" in result.output
    assert "Traceback" not in result.output
    assert not (project / ".reprolab" / "history.sqlite").exists() or not BenchStore(
        project / ".reprolab" / "history.sqlite").runs()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["benchmarks"].append(dict(d["benchmarks"][0])),
         "benchmarks[4].fullname: 'benchmarks/test_k.py::test_nmi[reprolab]' again (benchmarks[0] has it)"),
        (lambda d: d.update(commit_info="abc"), "commit_info: expected an object, got str"),
        (lambda d: d.update(machine_info=[1]), "machine_info: expected an object, got list"),
        (lambda d: d["machine_info"].update(cpu="x"), "machine_info.cpu: expected an object, got str"),
        (lambda d: d["benchmarks"][0]["stats"].update(min="a"), "benchmarks[0].stats.min: expected a finite number"),
        (lambda d: d["benchmarks"][0]["stats"].update(iqr="a"), "benchmarks[0].stats.iqr: expected a finite number"),
        (lambda d: d["benchmarks"][1].update(extra_info=[1]), "benchmarks[1].extra_info: expected an object"),
        (lambda d: d["benchmarks"][1].update(params="p"), "benchmarks[1].params: expected an object"),
        (lambda d: d["benchmarks"][0]["stats"].update(median=0), "benchmarks[0].stats.median: expected a finite "
                                                                  "number of seconds > 0, got 0"),
        (lambda d: d["benchmarks"][0]["stats"].update(data=[0.01, -0.01, 0.01]), "benchmarks[0].stats.data[1]: expected"),
    ],
)
def test_malformed_fields_are_one_line_and_store_nothing(project: Path, change: Any, message: str) -> None:
    path = _write_run(project, 0, np.random.default_rng(0))
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    result = CliRunner().invoke(cli, ["bench", "record", str(path)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result
    assert f"run0.json: {message}" in result.output, result.output
    assert not (project / ".reprolab" / "history.sqlite").exists() or not BenchStore(
        project / ".reprolab" / "history.sqlite").runs()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("reference: 5\n", "kernels.yaml: reference: expected a non-empty string, got 5"),
        ("kernels: [{match: test_merge, target: 12}]\n", "kernels.yaml: kernels[0].target: expected a non-empty"),
        ("kernels: [{match: test_merge, cpu_bound: 'false'}]\n", "kernels[0].cpu_bound: expected true or false"),
        ("kernels: [{match: test_merge, target_seconds: .inf}]\n", "kernels[0].target_seconds: expected a number"),
        ("kernels: [{match: test_merge, target_seconds: -1}]\n", "kernels[0].target_seconds: expected a number"),
        ("kernels: [{match: test_merge, peer: {name: x, kernel: 3}}]\n", "kernels[0].peer.kernel: expected a non"),
    ],
)
def test_a_malformed_kernels_yaml_is_one_line_and_a_warning_on_the_page(
    project: Path, config: str, message: str
) -> None:
    runner = _record_series(project, slow_last=None)
    (project / "benchmarks" / "kernels.yaml").write_text(config)
    result = runner.invoke(cli, ["bench", "compare"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result
    assert message in result.output and result.output.count("\n") == 1, result.output
    history = History(project / ".reprolab" / "history.sqlite")
    write_reports(project / "reports", RunInfo("r", "2026-02-01T00:00:00", None, {}, "m", "t"), [], history=history)
    page = (project / "reports" / "latest.html").read_text()
    assert 'id="benchmarks"' in page and message in page


def test_a_kernels_yaml_that_is_a_folder_is_one_line(project: Path) -> None:
    runner = _record_series(project, slow_last=None)
    (project / "benchmarks" / "kernels.yaml").unlink()
    (project / "benchmarks" / "kernels.yaml").mkdir()
    result = runner.invoke(cli, ["bench", "compare"])
    assert result.exit_code == 1 and "kernels.yaml: cannot read" in result.output, result.output


def test_a_damaged_history_is_moved_aside_not_a_traceback(project: Path) -> None:
    database = project / ".reprolab" / "history.sqlite"
    database.parent.mkdir()
    database.write_text("not a database")
    runner = CliRunner()
    result = runner.invoke(cli, ["bench", "compare"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result
    assert "was unreadable" in result.output and "no benchmark runs recorded yet" in result.output
    database.write_text("not a database")
    path = _write_run(project, 0, np.random.default_rng(0))
    result = runner.invoke(cli, ["bench", "record", str(path)])
    assert result.exit_code == 0, result.output
    assert "was unreadable" in result.output and "recorded: " in result.output
    assert len(BenchStore(database).runs()) == 1 and list(database.parent.glob("history.sqlite.corrupt-*"))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--threshold", "-3"], "Invalid value for '--threshold': -3.0 is not a finite number > 0"),
        (["--threshold", "nan"], "'--threshold': nan is not"),
        (["--alpha", "1"], "Invalid value for '--alpha': 1.0 is not in (0, 1)"),
        (["--alpha", "nan"], "'--alpha': nan is not in (0, 1)"),
        (["-k", "test_nothing"], "Invalid value for -k: no recorded kernel contains 'test_nothing'"),
    ],
)
def test_compare_refuses_bad_options_in_one_line(project: Path, options: list[str], message: str) -> None:
    runner = _record_series(project, slow_last=None)
    result = runner.invoke(cli, ["bench", "compare", *options])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result
    assert message in result.output and "Traceback" not in result.output, result.output


def test_report_has_a_benchmarks_page_with_peer_and_target(project: Path) -> None:
    _record_series(project, slow_last="test_merge")
    history = History(project / ".reprolab" / "history.sqlite")
    run = RunInfo("r", "2026-02-01T00:00:00", None, {}, "m", "t")
    write_reports(project / "reports", run, [], history=history)
    page = (project / "reports" / "latest.html").read_text()
    assert 'id="benchmarks"' in page and 'href="#benchmarks"' in page
    assert "scikit-learn" in page and "target 50 ms" in page and "stroke-dasharray=\"5 3\"" in page
    assert 'class="change-slower"' in page


def test_machine_is_the_cpu_or_the_named_machine(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from reprolab.bench.store import parse_benchmark_json

    path = _write_run(project, 0, np.random.default_rng(0))
    assert parse_benchmark_json(path).machine == "cpu x2"  # not the host name: CI containers change it
    monkeypatch.setenv("REPROLAB_BENCH_MACHINE", "nightly-box")
    assert parse_benchmark_json(path).machine == "nightly-box"


@pytest.mark.slow  # one pytest subprocess
def test_bench_run_times_the_selection_plus_the_reference_and_records_it(project: Path) -> None:
    (project / "benchmarks" / "test_tiny.py").write_text(
        "import pytest\n"
        "pytestmark = pytest.mark.benchmark\n"
        "def test_bench_reference_kernel(benchmark):\n"
        "    benchmark.pedantic(sum, args=(range(1000),), rounds=3)\n"
        "def test_bench_wanted(benchmark):\n"
        "    benchmark.pedantic(sum, args=(range(100),), rounds=3)\n"
        "def test_bench_other(benchmark):\n"
        "    benchmark.pedantic(sum, args=(range(10),), rounds=3)\n"
    )
    (project / "pyproject.toml").write_text('[tool.pytest.ini_options]\nmarkers = ["benchmark: b"]\n')
    result = CliRunner().invoke(cli, ["bench", "run", "-k", "wanted"])
    assert result.exit_code == 0, result.output
    (run,) = BenchStore(project / ".reprolab" / "history.sqlite").runs()
    assert sorted(k.name for k in run.kernels) == ["test_bench_reference_kernel", "test_bench_wanted"]
    assert all(len(k.rounds) == 3 for k in run.kernels)  # every round saved
