#!/usr/bin/env bash
# The gpu-tier rehearsal on a machine with a CUDA GPU (never run by CI). Under 10 minutes: smoke scale, 1 seed.
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi || { echo "no NVIDIA GPU here: nothing to rehearse on CUDA" >&2; exit 2; }
python3 -m venv .venv-gpu
.venv-gpu/bin/pip install -q torch -e ".[all,test]" "jax[cuda12]"
.venv-gpu/bin/python -c "import torch, jax; print('torch cuda', torch.cuda.is_available(), 'jax', jax.default_backend())"
timeout 540 .venv-gpu/bin/reprolab rehearse --scale smoke --seeds 1 --data "${OUT:-/tmp}/rehearse-data" \
  | tee "${OUT:-/tmp}/rehearse.log"
