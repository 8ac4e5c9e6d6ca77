"""Record mergekit 0.1.5's outputs for the configs of tests/merging/mergekit_arch_cases.py (slices, gradients,
filters, tokenizer settings on Llama / Mistral / Qwen2 / Phi / GPT-2 stand-ins) as per-tensor digests in
tests/merging/data/mergekit_ref/layout.json, compared by tests/merging/test_merging_mergekit_layout.py.

mergekit stays out of the project's venv: run it from its own (see docs/merging.md, "Benchmark")::

    REPROLAB_MERGEKIT_PYTHON=/path/to/venv-mergekit/bin/python \\
        PYTHONPATH=. python benchmarks/merging/record_mergekit_layout_reference.py [CASE ...]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "merging"))

from mergekit_arch_cases import CASES, REFERENCE, build_models, summarize, write_config

MERGEKIT_PY = os.environ.get("REPROLAB_MERGEKIT_PYTHON", "/work/venv-mergekit/bin/python")


def main() -> None:
    version = subprocess.run(
        [
            MERGEKIT_PY,
            "-c",
            "import importlib.metadata as m; print(m.version('mergekit'), "
            "m.version('torch'), m.version('transformers'))",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    recorded = json.loads(REFERENCE.read_text()) if REFERENCE.exists() else {"cases": {}}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    names = sys.argv[1:] or list(CASES)  # names given: record only those
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        for arch, tok in sorted({CASES[n][:2] for n in names}):
            build_models(root, arch, tok)
        for name in names:
            tok = CASES[name][1]
            out = root / f"out_{name}"
            cmd = [
                MERGEKIT_PY,
                "-m",
                "mergekit.scripts.run_yaml",
                str(write_config(root, name)),
                str(out),
                "--no-lazy-unpickle",
                *([] if tok else ["--no-copy-tokenizer"]),
            ]
            done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if done.returncode != 0 and not list(out.glob("*.safetensors")):
                raise RuntimeError(f"mergekit failed on {name}: {done.stderr[-2000:]}")
            recorded["cases"][name] = summarize(out, tok)
            if done.returncode != 0:  # tensors written, then mergekit failed (e.g. saving config.json)
                recorded["cases"][name]["mergekit_error"] = done.stderr.strip().splitlines()[-1]
            print(
                f"recorded {name}{' (mergekit failed after writing the tensors)' if done.returncode else ''}"
            )
            _save(recorded, version)


def _save(recorded: dict, version: list[str]) -> None:
    recorded["recorded_with"] = dict(zip(("mergekit", "torch", "transformers"), version, strict=True))
    REFERENCE.parent.mkdir(parents=True, exist_ok=True)
    REFERENCE.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
