#!/usr/bin/env bash
# Runs one ssl_jax command on every worker of an existing Cloud TPU VM pod slice.
#
#   launch/tpu_pod.sh --tpu=NAME --zone=ZONE [--project=P] [--dry-run] [--no-install] -- \
#       python -m ssl_jax.main --config=configs/dino.py:imagenet --workdir=gs://BUCKET/dino
#
# It creates nothing it cannot delete: it copies this checkout to ~/ssl_jax on each worker
# (gcloud ... scp --worker=all), installs requirements there, and runs the same command on all
# workers (jax.distributed detects the pod slice itself). --dry-run prints the gcloud commands.
set -euo pipefail
tpu=""; zone=""; project=""; dry=0; install=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tpu=*) tpu="${1#*=}"; shift;;
    --zone=*) zone="${1#*=}"; shift;;
    --project=*) project="${1#*=}"; shift;;
    --dry-run) dry=1; shift;;
    --no-install) install=0; shift;;
    --) shift; break;;
    *) echo "launch/tpu_pod.sh: unknown option $1" >&2; exit 2;;
  esac
done
[[ -n "$tpu" && -n "$zone" ]] || { echo "launch/tpu_pod.sh: --tpu and --zone are required" >&2; exit 2; }
[[ $# -gt 0 ]] || { echo "launch/tpu_pod.sh: give the command after --" >&2; exit 2; }
root="$(cd "$(dirname "$0")/.." && pwd)"
gc=(gcloud compute tpus tpu-vm)
common=(--zone="$zone" --worker=all)
[[ -n "$project" ]] && common+=(--project="$project")
user_cmd="$(printf '%q ' "$@")"
steps=()
steps+=("$(printf '%q ' tar -C "$root" --exclude=.git --exclude=runs -czf /tmp/ssl_jax.tgz .)")
steps+=("$(printf '%q ' "${gc[@]}" scp /tmp/ssl_jax.tgz "$tpu":/tmp/ssl_jax.tgz "${common[@]}")")
remote="mkdir -p ~/ssl_jax && tar -C ~/ssl_jax -xzf /tmp/ssl_jax.tgz && cd ~/ssl_jax"
if [[ $install -eq 1 ]]; then
  remote+=" && pip install -q 'jax[tpu]' -r requirements.txt && pip install -q --no-deps -e ."
fi
remote+=" && $user_cmd"
steps+=("$(printf '%q ' "${gc[@]}" ssh "$tpu" "${common[@]}" --command="$remote")")
for s in "${steps[@]}"; do
  if [[ $dry -eq 1 ]]; then echo "$s"; else eval "$s"; fi
done
