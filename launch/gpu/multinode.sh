#!/usr/bin/env bash
#SBATCH --job-name=align_jax
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --exclusive
#SBATCH --time=24:00:00
#SBATCH --output=align_jax-%j.out
#
# Run `python -m align_jax.main` on every node of a SLURM allocation, one process
# per node driving all of that node's GPUs.
#
# Every process runs the same program. The first node hosts JAX's coordinator;
# each process learns the coordinator address, the process count and its own
# index from ALIGN_JAX_COORDINATOR, ALIGN_JAX_NUM_PROCESSES and ALIGN_JAX_PROCESS_ID,
# which align_jax.parallel.initialize_distributed() reads. Pair it with a mesh such
# as gin/mesh/h100x8.gin (data parallel across nodes, FSDP within a node).
#
# Usage:
#   sbatch [--nodes=N] [other sbatch options] launch/gpu/multinode.sh ARGS_FOR_ALIGN_JAX_MAIN...
#   bash launch/gpu/multinode.sh ARGS...      (inside an salloc allocation)
#
# The #SBATCH lines above are defaults; options given to sbatch override them.
# Submit from the root of the align_jax checkout with its Python environment
# active (the environment is passed on to every node).
#
# Environment (optional):
#   ALIGN_JAX_REPO    the align_jax checkout (default: the submission folder)
#   PYTHON            interpreter to run (default: python on PATH)
#   ALIGN_JAX_PORT    coordinator port on the first node (default: 20000 + job id mod 10000)
#   LOG_DIR           per-process logs go to LOG_DIR/slurm-JOBID/process-N.log
#                     (default: align_jax_logs, under $HOME)
#   SRUN_FLAGS        extra srun flags, e.g. "--mpi=none --cpu-bind=none"
#
# Example:
#   sbatch --nodes=4 launch/gpu/multinode.sh \
#     --gin_file=gin/models/llama3_8b.gin --gin_file=gin/mesh/h100x8.gin \
#     --gin_file=gin/runs/sft.gin --gin.WORKDIR="'/shared/runs/sft1'" \
#     --gin.INIT_FROM="'/shared/models/Meta-Llama-3-8B'" --gin.TRAIN_DATA="'/shared/sft.jsonl'" \
#     --gin.VOCABULARY="'/shared/models/Meta-Llama-3-8B'" --gin.STEPS=1000
set -euo pipefail

usage() { sed -n '9,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
die() { echo "multinode.sh: error: $*" >&2; exit 1; }

case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  "") die "no arguments for align_jax.main; e.g. sbatch launch/gpu/multinode.sh --gin_file=... (see --help)" ;;
esac
[[ -n "${SLURM_JOB_ID:-}" ]] || die "not inside a SLURM job; submit with sbatch or run inside salloc"
command -v srun >/dev/null || die "srun is not on PATH"
command -v scontrol >/dev/null || die "scontrol is not on PATH"

repo="${ALIGN_JAX_REPO:-${SLURM_SUBMIT_DIR:-$PWD}}"
[[ -f "$repo/align_jax/main.py" ]] || die "'$repo' is not an align_jax checkout; set ALIGN_JAX_REPO"
cd "$repo"
python_bin="${PYTHON:-python}"
command -v "$python_bin" >/dev/null || die "'$python_bin' not found; activate the environment or set PYTHON"

mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
((${#nodes[@]} > 0)) || die "could not list the nodes of job $SLURM_JOB_ID"
num_nodes="${#nodes[@]}"
port="${ALIGN_JAX_PORT:-$((20000 + SLURM_JOB_ID % 10000))}"

export ALIGN_JAX_COORDINATOR="${nodes[0]}:$port"
export ALIGN_JAX_NUM_PROCESSES="$num_nodes"
export PYTHONUNBUFFERED=1

log_dir="${LOG_DIR:-$HOME/align_jax_logs}/slurm-$SLURM_JOB_ID"
mkdir -p "$log_dir"
read -r -a srun_flags <<< "${SRUN_FLAGS:-}"

echo "align_jax: $num_nodes processes, coordinator $ALIGN_JAX_COORDINATOR, logs in $log_dir"
# One task per node; each sets its own process id from SLURM_PROCID.
# --kill-on-bad-exit stops the other processes (stuck in collectives) when one fails.
# shellcheck disable=SC2016  # $SLURM_PROCID and $@ are expanded by each task's shell
srun --nodes="$num_nodes" --ntasks="$num_nodes" --ntasks-per-node=1 --kill-on-bad-exit=1 \
  --output="$log_dir/process-%t.log" ${srun_flags[@]+"${srun_flags[@]}"} \
  bash -c 'export ALIGN_JAX_PROCESS_ID="$SLURM_PROCID"; exec "$0" -m align_jax.main "$@"' \
  "$python_bin" "$@"
