#!/usr/bin/env bash
# One-command accelerator check (issue 35): device, 20 quickstart steps on it (loss falls, no NaN),
# the MFU rows (ViT-B MAE / DINO / DINOv2 / I-JEPA, bf16), an input-pipeline row; one JSON.
#
#   bash benchmarks/accelerator_check.sh [--wheels DIR] [--out FILE] [--smoke]
#
# The accelerator machines have JAX with CUDA, flax, optax, orbax and einops but not grain,
# ml_collections, tensorflow-datasets, dm_pix, mlxtend or tensorboardX, and cannot download.
# Prepare their wheels beforehand on a machine with pip (docs/performance.md, "Accelerator check"):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d wheels \
#     grain==0.2.18 ml_collections==1.1.0 tensorflow-datasets==4.9.10 dm_pix==0.4.5 \
#     mlxtend==0.25.0 tensorboardX==2.6.5 ...   # and their missing dependencies
# then pass --wheels wheels: they are installed into a private folder (no index, no network) and
# put on PYTHONPATH; the machine's own JAX stays. --smoke: a tiny CPU run of the whole path.
set -euo pipefail
cd "$(dirname "$0")/.."
wheels=""; args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --wheels) wheels="$2"; shift 2;;
    --wheels=*) wheels="${1#*=}"; shift;;
    *) args+=("$1"); shift;;
  esac
done
if [[ -n "$wheels" ]]; then
  site="${TMPDIR:-/tmp}/ssl_jax_accel_site"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" "$wheels"/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec python3 benchmarks/accelerator_check.py "${args[@]}"
