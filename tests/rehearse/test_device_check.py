"""The gpu-claim device check asks the framework the claim's experiment runs on, and imports it only then."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from reprolab.claims import environment
from reprolab.claims.schema import Claim

_spec = importlib.util.spec_from_file_location(
    "claimfiles", Path(__file__).parents[1] / "claims" / "claimfiles.py"
)
claimfiles = importlib.util.module_from_spec(
    _spec
)  # the claims tests' claim-file builders, not a copy of them
_spec.loader.exec_module(claimfiles)  # type: ignore[union-attr]


def _gpu_claim(experiment: str) -> Claim:
    import yaml

    text = claimfiles.claim_yaml("g", experiment=experiment, verdict="untested").replace(
        "scale: fast", "scale: gpu"
    )
    return Claim.model_validate(yaml.safe_load("claims:\n" + text)["claims"][0])


@pytest.fixture
def torch_cuda_jax_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine whose torch sees a GPU while JAX is the CPU build (jax[cpu] beside a CUDA torch)."""
    monkeypatch.delenv("REPROLAB_NO_CUDA", raising=False)
    monkeypatch.delenv(environment.REHEARSAL_ENV, raising=False)
    monkeypatch.setattr(environment, "_probe", {"torch": "cuda", "jax": "cpu"}.__getitem__)


def test_gpu_claim_asks_its_own_framework(torch_cuda_jax_cpu: None) -> None:
    assert environment.framework_of("clustering.across_runs") == "jax"
    assert environment.skip_reason(_gpu_claim("clustering.overcluster_then_merge")) == (
        "gpu claim: no CUDA device here (jax's backend is cpu)"
    )
    assert environment.skip_reason(_gpu_claim("lvm.train")) is None  # torch's CUDA serves the torch lines
    assert environment.skip_reason(_gpu_claim("merging.locale_suite")) is None
    assert environment.skip_reason(_gpu_claim("mylab.train")) is None  # unknown lineage: either framework


def test_cpu_backend_everywhere_names_each_framework(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REPROLAB_NO_CUDA", raising=False)
    monkeypatch.delenv(environment.REHEARSAL_ENV, raising=False)
    monkeypatch.setattr(environment, "_probe", lambda framework: "cpu")
    assert (
        environment.skip_reason(_gpu_claim("lvm.train"))
        == "gpu claim: no CUDA device here (torch's backend is cpu)"
    )
    assert "neither torch nor JAX" in environment.skip_reason(_gpu_claim("mylab.train"))  # type: ignore[operator]
    monkeypatch.setenv(environment.REHEARSAL_ENV, "1")  # a rehearsal runs gpu claims on CPU on purpose
    assert environment.skip_reason(_gpu_claim("lvm.train")) is None


CONFTEST = """
import sys

def pytest_sessionfinish(session):
    print("JAX-IMPORTED" if "jax" in sys.modules else "JAX-NOT-IMPORTED")
"""


def test_jax_is_imported_only_when_a_gpu_claim_is_selected(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (pytester.path / "pyproject.toml").write_text(claimfiles.PROJECT)
    claimfiles.write_note(pytester.path)
    data = claimfiles.claim_yaml(
        "cluster-gpu",
        experiment="clustering.overcluster_then_merge",
        verdict="untested",
        config="{n_components: 20}",
        expect="{metric: merged_nmi, statistic: mean, at_least: 0.5, interval: point, why: test}",
        extra="requires: [REPROLAB_TEST_MNIST]\n",
    ).replace("scale: fast", "scale: gpu")
    pytester.makefile(
        ".yaml", **{"expectations/a": claimfiles.SOURCE + "claims:\n" + claimfiles.claim_yaml("ok") + data}
    )
    pytester.makeconftest(CONFTEST)
    monkeypatch.delenv("REPROLAB_NO_CUDA", raising=False)
    monkeypatch.setenv("REPROLAB_TEST_MNIST", str(tmp_path))

    fast = pytester.runpytest_subprocess("-m", "fast", "-s")  # a fresh interpreter: sys.modules is its own
    fast.assert_outcomes(passed=1, deselected=1)
    fast.stdout.fnmatch_lines(["*JAX-NOT-IMPORTED*"])

    gpu = pytester.runpytest_subprocess("-m", "gpu", "-rs", "-s")
    gpu.assert_outcomes(skipped=1, deselected=1)
    gpu.stdout.fnmatch_lines(["*JAX-IMPORTED*", "*gpu claim: no CUDA device here (jax's backend is cpu)*"])
