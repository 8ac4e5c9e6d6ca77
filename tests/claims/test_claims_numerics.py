"""Portable numerics: experiment workers start with every kernel library held to its AVX2 code path."""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

import pytest
from labproject import build_lab

from reprolab.claims.executor import IsolatedExecutor, Job, TaskOutcome
from reprolab.claims.numerics import PINS, XLA_FLAG, cpu_supports_pins, portable_env, worker_environ
from reprolab.claims.project import ProjectConfigError, find_project
from reprolab.claims.resolve import resolve_experiment

AVX2_CPU = "processor\t: 0\nflags\t\t: fpu sse2 avx fma avx2 bmi2\n"
OLD_CPU = "processor\t: 0\nflags\t\t: fpu sse2 sse4_2 avx\n"


def test_cpu_support_needs_avx2_and_fma() -> None:
    assert cpu_supports_pins(AVX2_CPU)
    assert not cpu_supports_pins(OLD_CPU)
    assert not cpu_supports_pins("")


def test_pins_never_override_what_the_user_set() -> None:
    extra = portable_env(
        {"MKL_CBWR": "COMPATIBLE", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}, supported=True
    )
    assert "MKL_CBWR" not in extra
    assert extra["ATEN_CPU_CAPABILITY"] == "avx2" and extra["OPENBLAS_CORETYPE"] == "Haswell"
    assert extra["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=2 {XLA_FLAG}"
    assert "XLA_FLAGS" not in portable_env({"XLA_FLAGS": "--xla_cpu_max_isa=SSE4_2"}, supported=True)
    assert portable_env({}, supported=False) == {}


def test_worker_environ_restores_the_environment() -> None:
    env = {"XLA_FLAGS": "--a"}
    with worker_environ(True, env) as extra:
        assert env["OMP_NUM_THREADS"] == "1"
        if cpu_supports_pins():
            assert env["XLA_FLAGS"].endswith(XLA_FLAG)
    assert env == {"XLA_FLAGS": "--a"}
    with worker_environ(False, env) as extra:
        assert "MKL_CBWR" not in extra and env["XLA_FLAGS"] == "--a"
    assert env == {"XLA_FLAGS": "--a"}


PROBE = """
    import os


    def pins(config, seed):
        keys = ["ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "OPENBLAS_CORETYPE"]
        pinned = all(k in os.environ for k in keys) and "--xla_cpu_max_isa" in os.environ.get("XLA_FLAGS", "")
        return {"x": float(pinned)}
"""


@pytest.mark.skipif(not cpu_supports_pins(), reason="the pins apply to x86-64 CPUs with AVX2 and FMA only")
@pytest.mark.parametrize("portable", [True, False])
def test_a_worker_starts_with_the_pins_and_the_parent_keeps_its_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, portable: bool
) -> None:
    for key in [*PINS, "XLA_FLAGS"]:
        monkeypatch.delenv(key, raising=False)
    root = build_lab(tmp_path)
    (root / "mylab" / "envprobe.py").write_text(textwrap.dedent(PROBE).lstrip())
    monkeypatch.syspath_prepend(str(root))
    spec = resolve_experiment("mylab.envprobe:pins", [])
    outcomes: list[TaskOutcome] = []
    with IsolatedExecutor(1, portable_numerics=portable) as executor:
        executor.run([Job("k", spec, {}, 0)], lambda job, outcome: outcomes.append(outcome))
    assert outcomes[0].error is None, outcomes[0].error
    assert outcomes[0].metrics == {"x": 1.0 if portable else 0.0}
    assert not any(key in os.environ for key in [*PINS, "XLA_FLAGS"])


def test_portable_numerics_is_a_real_boolean(tmp_path: Path) -> None:
    root = build_lab(tmp_path)
    pyproject = root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + 'portable_numerics = "no"\n')
    with pytest.raises(ProjectConfigError, match="portable_numerics must be true or false"):
        find_project(root)
    pyproject.write_text(pyproject.read_text().replace('"no"', "false"))
    assert find_project(root).portable_numerics is False


@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf", '"60"', "true"])
def test_project_timeout_must_be_a_finite_positive_number(tmp_path: Path, value: str) -> None:
    root = build_lab(tmp_path)
    pyproject = root / "pyproject.toml"
    text = re.sub(r"(?m)^timeout_s = .*\n", "", pyproject.read_text())
    pyproject.write_text(text + f"timeout_s = {value}\n")
    with pytest.raises(ProjectConfigError, match="timeout_s must be a positive number of seconds"):
        find_project(root)
