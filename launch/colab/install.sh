#!/usr/bin/env bash
# Install align_jax from this checkout into the running Python, with the JAX build of the
# runtime: jax[tpu] on a TPU runtime, jax[cuda12] where an NVIDIA GPU answers, the CPU
# build otherwise, at the version setup.py pins. The Colab notebooks' first cell clones
# the repository and runs this script; it works the same on any Linux host. The install
# is a regular one (not editable), so that a notebook's running kernel imports it at once.
#
# Usage:
#   launch/colab/install.sh [cpu|gpu|tpu]     (default: the runtime found)
#
# Environment (optional):
#   PYTHON        the interpreter to install into (default: python3)
#   JAX_VERSION   override the jax version read from setup.py
set -euo pipefail

# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/../tpu/common.sh"

case "${1:-}" in
  -h|--help) usage; exit 0 ;;
esac
[[ $# -le 1 ]] || die "expected at most one argument (cpu, gpu or tpu), got $#"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python="${PYTHON:-python3}"
runtime="${1:-}"
if [[ -z "$runtime" ]]; then
  # A TPU VM (Colab's TPU runtimes are) names its accelerator and shows its chips.
  if [[ -n "${TPU_ACCELERATOR_TYPE:-}" || -e /dev/accel0 ]]; then
    runtime=tpu
  elif command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    runtime=gpu
  else
    runtime=cpu
  fi
fi

jax_version="$(pinned_jax_version "$repo_root")"
case "$runtime" in
  cpu) accelerator=() ;;
  gpu) accelerator=("jax[cuda12]==$jax_version") ;;
  tpu) accelerator=("jax[tpu]==$jax_version") ;;
  *) die "unknown runtime '$runtime': expected cpu, gpu or tpu" ;;
esac
echo "Installing align_jax for the $runtime runtime (jax $jax_version)"
"$python" -m pip install --quiet "$repo_root" ${accelerator[@]+"${accelerator[@]}"}
