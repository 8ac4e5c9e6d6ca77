"""An outside lab's project, built in a temporary directory: its own package, note, claims folder and config."""

from __future__ import annotations

import textwrap
from pathlib import Path

NOTE = "Calibration Study\n\nThe expected calibration error stays below 0.05\non every seed.\n"
SOURCE = 'source: {document: calib.txt, title: "Calibration Study"}\nclaims:\n'

MODULES = {
    "__init__.py": "",
    "helpers.py": "OFFSET = 0.0\n",
    "unused.py": "VALUE = 1\n",
    "calib.py": """
        from reprolab import config_value, experiment
        from mylab.helpers import OFFSET


        @experiment("calib.ece", metrics={"ece": (0.0, 1.0)}, config_keys=("bins",))
        def ece(config, seed):
            return {"ece": 0.001 * config_value(config, "bins", 10, kind=int) + OFFSET}


        def plain(config, seed):
            return {"score": 0.5}
    """,
    "faults.py": """
        import os
        import signal
        import sys
        import time

        from reprolab import experiment


        @experiment("faults.exit", metrics={"x": (0, 1)}, config_keys=())
        def hard_exit(config, seed):
            os._exit(3)


        @experiment("faults.segfault", metrics={"x": (0, 1)}, config_keys=())
        def segfault(config, seed):
            os.kill(os.getpid(), signal.SIGSEGV)
            time.sleep(5)


        @experiment("faults.sysexit", metrics={"x": (0, 1)}, config_keys=())
        def soft_exit(config, seed):
            sys.exit(4)


        @experiment("faults.hang", metrics={"x": (0, 1)}, config_keys=())
        def hang(config, seed):
            time.sleep(600)


        @experiment("faults.exit_on_one", metrics={"x": (0, 1)}, config_keys=())
        def exit_on_one(config, seed):
            if seed == 1:
                os._exit(3)
            return {"x": 1.0}


        @experiment("faults.missing", metrics={"x": (0, 1)}, config_keys=())
        def missing(config, seed):
            import nosuchpkg_for_reprolab_tests  # noqa: F401


        @experiment("faults.pairs", metrics={"x": (0, 1)}, config_keys=())
        def pairs(config, seed):
            return [("x", 1.0)]  # a list of pairs, not a dict: dict() would have taken it as metrics


        @experiment("faults.interrupt", metrics={"x": (0, 1)}, config_keys=())
        def interrupt(config, seed):
            raise KeyboardInterrupt


        @experiment("faults.chatty", metrics={"x": (0, 1)}, config_keys=())
        def chatty(config, seed):
            print("CHATTY EXPERIMENT OUTPUT")
            return {"x": 1.0}
    """,
    "broken.py": """
        from reprolab import experiment

        raise RuntimeError("broken at import")


        @experiment("broken.never", metrics={"x": (0, 1)}, config_keys=())
        def never(config, seed):
            return {"x": 1.0}
    """,
}

PYPROJECT = """\
[project]
name = "mylab"
version = "0"

[tool.reprolab]
claims = ["claims"]
notes = "docs/notes"
experiments = ["mylab.calib", "mylab.faults", "mylab.broken"]
timeout_s = 120
"""


def claim(claim_id: str, experiment: str, metric: str, bound: str, verdict: str, extra: str = "") -> str:
    return textwrap.indent(
        textwrap.dedent(
            f"""\
            - id: {claim_id}
              quote: "The expected calibration error stays below 0.05 on every seed."
              statement: s
              scale: fast
              experiment: {experiment}
              expect: {{metric: {metric}, statistic: mean, {bound}, why: w}}
              verdict: {verdict}
            """
        )
        + textwrap.indent(textwrap.dedent(extra), "  "),
        "  ",
    )


CALIB_CLAIMS = (
    SOURCE
    + claim("ece-small", "calib.ece", "ece", "at_most: 0.05", "reproduced")
    + claim("plain-ref", "mylab.calib:plain", "score", "between: [0.4, 0.6]", "reproduced")
)


def build_lab(root: Path, claims: str = CALIB_CLAIMS) -> Path:
    (root / "mylab").mkdir(parents=True)
    for name, text in MODULES.items():
        (root / "mylab" / name).write_text(textwrap.dedent(text).lstrip())
    (root / "docs" / "notes").mkdir(parents=True)
    (root / "docs" / "notes" / "calib.txt").write_text(NOTE)
    (root / "claims").mkdir()
    (root / "claims" / "calib.yaml").write_text(claims)
    (root / "pyproject.toml").write_text(PYPROJECT)
    return root
