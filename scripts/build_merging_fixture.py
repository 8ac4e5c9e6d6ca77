"""Rebuild the cross-locale merging fixture (fixtures/merging/locales): tiny pretrained encoder + fine-tunes.

Usage: python scripts/build_merging_fixture.py [--out DIR]
Deterministic on a given torch/numpy build; takes about a minute on two CPU cores.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from reprolab.data.locales import FIXTURE_DIR, build_fixture


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=FIXTURE_DIR)
    args = ap.parse_args()
    torch.set_num_threads(1)
    build_fixture(args.out)


if __name__ == "__main__":
    main()
