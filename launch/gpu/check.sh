#!/usr/bin/env bash
# One-GPU check of a host, meant for one short session (not yet timed on a GPU):
# versions and the cuDNN attention test, then three ~1B bf16 figures, each against its
# peer in the same run:
#   training_1b.json   align_jax vs transformers training, MFU against the datasheet peak
#   sampling_1b.json   the sampler vs transformers `generate` (16 prompts x 128 tokens,
#                      256 new tokens; goal: >= 5x tokens/s)
#   ppo_1b.json        one PPO iteration's split into generation, scoring and training
#                      (goal: generation <= 60%)
#
#   launch/gpu/check.sh [OUTPUT_DIR]     # writes them under OUTPUT_DIR (default gpu_check)
#
# Runs from the repository root with whatever python3 holds jax[cuda], flax, optax,
# orbax-checkpoint, transformers and torch (no install step: GPU hosts often have no
# network). JAX does not preallocate, so PyTorch can share the GPU in the same process.
set -uo pipefail
if [[ "${1:-}" == "--help" ]]; then sed -n '2,15p' "$0"; exit 0; fi
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
python3 -m align_jax.benchmarks.sampling --d_model 2048 --layers 16 --heads 16 --kv_heads 16 \
  --mlp_dim 5504 --vocab 32000 --batch 16 --prompt 128 --new_tokens 256 --repeats 3 \
  --dtype bfloat16 > "$out/sampling_1b.json" || status=1
python3 -m align_jax.benchmarks.ppo --configs 1b --iterations 3 > "$out/ppo_1b.json" || status=1
cat "$out"/*.json
exit $status
