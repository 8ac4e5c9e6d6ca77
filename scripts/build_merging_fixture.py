"""Rebuild the cross-locale merging fixture (fixtures/merging/locales): tiny pretrained encoder + fine-tunes.

Usage: python scripts/build_merging_fixture.py [--out DIR] [--seed N]
Deterministic on a given torch/numpy build; takes 15-30 s of one core. The committed fixture is seed 0; the
claims build the other seeds' worlds on first use (reprolab.data.locales.load_world), so only seed 0 is kept.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from reprolab.data.locales import FIXTURE_DIR, WorldSpec, build_fixture


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=FIXTURE_DIR)
    ap.add_argument("--seed", type=int, default=0, help="world seed (0 = the committed fixture)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    build_fixture(args.out, replace(WorldSpec(), seed=args.seed))


if __name__ == "__main__":
    main()
