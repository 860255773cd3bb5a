#!/usr/bin/env bash
# Runs N cooperating ssl_jax processes on this machine (jax.distributed over 127.0.0.1), each with
# its own share of the CPU devices: what the multi-host test does, for trying multi-host locally.
#
#   launch/local.sh [--dry-run] [-n 2] [--devices-per-process 4] [--port 12355] -- \
#       python -m ssl_jax.main --config=configs/simclr.py:builtin --workdir=/tmp/mh
set -euo pipefail
n=2; per=4; port=12355; dry=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    -n) n="$2"; shift 2;;
    --devices-per-process) per="$2"; shift 2;;
    --port) port="$2"; shift 2;;
    --dry-run) dry=1; shift;;
    --) shift; break;;
    *) echo "launch/local.sh: unknown option $1" >&2; exit 2;;
  esac
done
[[ $# -gt 0 ]] || { echo "launch/local.sh: give the command after --" >&2; exit 2; }
pids=()
for ((i = 0; i < n; i++)); do
  cmd=(env XLA_FLAGS="--xla_force_host_platform_device_count=${per}" JAX_PLATFORMS=cpu "$@"
       --coordinator_address="127.0.0.1:${port}" --num_processes="${n}" --process_id="${i}")
  if [[ $dry -eq 1 ]]; then printf '%q ' "${cmd[@]}"; echo; continue; fi
  "${cmd[@]}" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
