"""Record mergekit 0.1.5's outputs for the configs of tests/merging/mergekit_cases.py (committed under
tests/merging/data/mergekit_ref/, compared by tests/merging/test_merging_mergekit_compat.py).

mergekit stays out of the project's venv: run it from its own (see docs/merging.md, "Benchmark")::

    REPROLAB_MERGEKIT_PYTHON=/path/to/venv-mergekit/bin/python \\
        PYTHONPATH=. python benchmarks/merging/record_mergekit_reference.py [CONFIG_NAME ...]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "merging"))

from mergekit_cases import CONFIGS, DARE_CONFIGS, REFERENCE, build_models, write_config

MERGEKIT_PY = os.environ.get("REPROLAB_MERGEKIT_PYTHON", "/work/venv-mergekit/bin/python")


def main() -> None:
    version = subprocess.run([MERGEKIT_PY, "-c", "import importlib.metadata as m; print(m.version('mergekit'), "
                              "m.version('torch'))"], check=True, capture_output=True, text=True).stdout.split()
    REFERENCE.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with tempfile.TemporaryDirectory() as d:
        root = build_models(Path(d))
        for name in sys.argv[1:] or [*CONFIGS, *DARE_CONFIGS]:  # names given: record only those
            out = root / f"out_{name}"
            subprocess.run([MERGEKIT_PY, "-m", "mergekit.scripts.run_yaml", str(write_config(root, name)), str(out),
                            "--no-lazy-unpickle", "--no-copy-tokenizer"], check=True, env=env,
                           stdout=subprocess.DEVNULL)
            shutil.copyfile(out / "model.safetensors", REFERENCE / f"{name}.safetensors")
            print(f"recorded {name}")
    (REFERENCE / "recorded_with.json").write_text(json.dumps({"mergekit": version[0], "torch": version[1]}) + "\n")


if __name__ == "__main__":
    main()
