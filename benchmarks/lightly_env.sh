#!/usr/bin/env bash
# Creates the separate virtualenv that `benchmarks/throughput.py --vs_lightly` runs lightly in
# (benchmark-only dependencies: they never enter ssl_jax's own environment).
#
#   bash benchmarks/lightly_env.sh [VENV_DIR]      # default: benchmarks/.lightly_venv (gitignored)
#
# What goes in, and why this way:
# * torch==2.13.0+cpu: the CPU-only wheel from the local wheelhouse (/opt/wheels, which pip's
#   find-links reads here; PIP_FIND_LINKS / --find-links point elsewhere on other machines). PyPI's
#   default Linux torch is a CUDA build (~555 MB + ~3 GB of nvidia-* wheels just to import).
# * torchvision==0.28.0 (the release paired with torch 2.13), timm==1.0.31 and lightly 1.6.0 (the
#   release users install today; LIGHTLY_VERSION=1.5.20 gives the one of the older tables) are
#   installed with --no-deps so that nothing pulls the CUDA torch. PyPI's torchvision is a CUDA
#   build whose C++ ops do not load next to the CPU torch; lightly and timm only need its Python
#   parts (resnet18, StochasticDepth), and benchmarks/lightly_step.py defines the two op schemas
#   (nms, qnms) that its import otherwise trips over (as tests/export/conftest.py does).
# * lightly's other requirements (pytorch_lightning, hydra-core, pydantic, requests, lightly_utils,
#   aenum, ...) serve its CLI, API client and data tooling, not the heads / losses / models the
#   benchmark imports, so they are left out; LIGHTLY_DID_VERSION_CHECK=True (set by
#   lightly_step.py) skips the background version check that would import its API client.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${1:-${LIGHTLY_VENV:-$HERE/.lightly_venv}}"
PY="${PYTHON:-python3}"
WHEELS="${TORCH_WHEELS:-/opt/wheels}"

"$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
FIND=()
[ -d "$WHEELS" ] && FIND=(--find-links "$WHEELS")

"${PIP[@]}" "${FIND[@]}" 'torch==2.13.0+cpu'
"${PIP[@]}" --no-deps torchvision==0.28.0 timm==1.0.31 "lightly==${LIGHTLY_VERSION:-1.6.0}"
"${PIP[@]}" numpy pillow pyyaml safetensors huggingface_hub

# Nothing may have replaced the CPU torch.
"$VENV/bin/python" - <<'EOF'
import torch
assert torch.__version__.endswith('+cpu'), f'expected the CPU torch wheel, got {torch.__version__}'
EOF
"$VENV/bin/python" "$HERE/lightly_step.py" --check
echo "lightly venv ready: $VENV/bin/python"
