#!/usr/bin/env bash
# One-GPU check of a host: versions, the cuDNN attention test, and the ~1B bf16
# training benchmark (align_jax vs transformers, MFU against the datasheet peak).
#
#   launch/gpu/check.sh [OUTPUT_DIR]     # writes OUTPUT_DIR/{versions.txt,training_1b.json}
#
# Runs from the repository root with whatever python3 holds jax[cuda], flax, optax,
# orbax-checkpoint, transformers and torch (no install step: GPU hosts often have no
# network). JAX does not preallocate, so PyTorch can share the GPU in the same process.
set -uo pipefail
if [[ "${1:-}" == "--help" ]]; then sed -n '2,9p' "$0"; exit 0; fi
out="${1:-gpu_check}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3 XLA_PYTHON_CLIENT_PREALLOCATE=false
export JAX_PLATFORMS=cuda
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import jax, flax, optax, torch, transformers; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__); print(jax.devices())"
} 2>&1 | tee "$out/versions.txt"
python3 -m pytest -q -p no:cacheprovider -s tests/models/test_transformer.py -k cudnn 2>&1 \
  | tail -n 15 | tee "$out/cudnn_test.txt"
status=0
python3 -m align_jax.benchmarks.training --configs 1b --steps 10 --repeats 3 \
  > "$out/training_1b.json" || {
  status=1
  echo "cudnn attention failed; the same benchmark with XLA's attention:" >&2
  python3 -m align_jax.benchmarks.training --configs 1b --steps 10 --repeats 3 \
    --attention_impl xla > "$out/training_1b_xla.json"
}
cat "$out"/training_1b*.json
exit $status
