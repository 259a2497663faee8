#!/usr/bin/env bash
# Run `python -m align_jax.main` on every worker of the TPU slice at once.
#
# Every host runs the same program; on TPU, JAX finds its peers by itself. The
# program starts in the background on each worker (so a dropped connection does
# not kill it) and writes its own log, LOG_DIR/RUN_NAME/<hostname>.log on that
# worker; TPU hostnames end in -w-<worker number>. Unless --detach is given, this
# script then follows all workers' logs, each line prefixed with its hostname,
# saves the combined stream under LOCAL_LOG_DIR, and exits non-zero if any worker
# failed. Ctrl-C stops following, not the run; use --stop for that.
#
# Usage:
#   launch/tpu/run.sh [options] -- ARGS_FOR_ALIGN_JAX_MAIN...
#   launch/tpu/run.sh --follow RUN_NAME | --tail [RUN_NAME] | --stop
#
# Environment (required):
#   PROJECT_ID, ZONE, TPU_NAME   as for create.sh
# Environment (optional):
#   REMOTE_DIR, REMOTE_VENV, TPU_SSH_FLAGS   as for setup.sh
#   LOG_DIR         log folder on the workers (default: align_jax_logs, under $HOME)
#   LOCAL_LOG_DIR   where the combined log is saved here
#                   (default: ~/.local/state/align_jax/launch-logs)
#
# Options:
#   --name RUN_NAME     name of the run's log folder (default: a timestamp)
#   --env KEY=VALUE     export KEY=VALUE on the workers first (repeatable)
#   --detach            start the run and return at once
#   --follow RUN_NAME   follow a running (or finished) run's logs until it ends
#   --tail [RUN_NAME]   print the last lines of each worker's log (default: latest run)
#   --stop              stop every run this script started on the workers
#   -h, --help          show this help
#
# Example:
#   launch/tpu/run.sh --env HF_HOME=/tmp/hf -- \
#     --gin_file=gin/models/llama3_8b.gin --gin_file=gin/mesh/v5p-64.gin \
#     --gin.run.workdir="'gs://my-bucket/runs/sft1'"
set -euo pipefail

# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
valid_name() { [[ "$1" =~ ^[A-Za-z0-9._-]+$ ]] || die "run name '$1' may only hold letters, digits, '.', '_' and '-'"; }

run_name="$(date '+%Y%m%d-%H%M%S')"
mode="start"
detach=0
tail_name=""
envs=()
while (($#)); do
  case "$1" in
    --name) run_name="${2:?--name needs a value}"; shift 2 ;;
    --name=*) run_name="${1#*=}"; shift ;;
    --env) envs+=("${2:?--env needs KEY=VALUE}"); shift 2 ;;
    --env=*) envs+=("${1#*=}"); shift ;;
    --detach) detach=1; shift ;;
    --follow) mode="follow"; run_name="${2:?--follow needs a run name}"; shift 2 ;;
    --follow=*) mode="follow"; run_name="${1#*=}"; shift ;;
    --tail)
      mode="tail"
      if [[ $# -ge 2 && "$2" != -* ]]; then tail_name="$2"; shift; fi
      shift ;;
    --stop) mode="stop"; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    *) die "unknown argument '$1'; put the program's arguments after '--' (see --help)" ;;
  esac
done

need_env PROJECT_ID ZONE TPU_NAME
need_gcloud
valid_name "$run_name"

workers_init
log_root="$(remote_path "${LOG_DIR:-align_jax_logs}")"

# Follows one run's log on every worker until its program ends; fails if any worker failed.
follow() {
  local run_dir="$log_root/$1"
  local local_dir="${LOCAL_LOG_DIR:-$HOME/.local/state/align_jax/launch-logs}"
  mkdir -p "$local_dir"
  echo "Following run '$1' on all workers of '$TPU_NAME' (Ctrl-C stops following, not the run);"
  echo "combined log: $local_dir/$1.log"
  on_all_workers "h=\$(hostname); d=$run_dir
    [[ -f \"\$d/\$h.pid\" ]] || { echo \"[\$h] no run '$1' here\"; exit 1; }
    tail --pid=\"\$(cat \"\$d/\$h.pid\")\" -n +1 -F \"\$d/\$h.log\" 2>/dev/null | sed -u \"s/^/[\$h] /\"
    rc=\$(cat \"\$d/\$h.rc\" 2>/dev/null || echo unknown)
    echo \"[\$h] exit status: \$rc\"; [[ \"\$rc\" == 0 ]]" \
    2>&1 | tee "$local_dir/$1.log"
}

case "$mode" in
  follow)
    follow "$run_name"
    exit ;;
  tail)
    if [[ -n "$tail_name" ]]; then
      valid_name "$tail_name"
      pick="d=$log_root/$tail_name"
    else
      pick="d=\$(ls -1dt $log_root/*/ 2>/dev/null | head -n 1)"
    fi
    on_all_workers "$pick; h=\$(hostname)
      [[ -n \"\$d\" && -f \"\$d/\$h.log\" ]] || { echo \"[\$h] no log found\"; exit 0; }
      echo \"== [\$h] \$d/\$h.log (exit status: \$(cat \"\$d/\$h.rc\" 2>/dev/null || echo running))\"
      tail -n 20 \"\$d/\$h.log\""
    exit 0 ;;
  stop)
    # Each run is its own process group (setsid below), so this also stops its children.
    on_all_workers "h=\$(hostname)
      for p in $log_root/*/\$h.pid; do
        [[ -f \"\$p\" ]] || continue
        pid=\$(cat \"\$p\")
        if kill -0 -- \"-\$pid\" 2>/dev/null; then
          kill -TERM -- \"-\$pid\" && echo \"[\$h] stopped process group \$pid (\$p)\"
        fi
      done"
    exit 0 ;;
esac

(($#)) || die "no arguments for align_jax.main; e.g. run.sh -- --gin_file=gin/quickstart.gin (see --help)"

# Build the remote command, quoting every value for the remote shell.
exports=""
for kv in ${envs[@]+"${envs[@]}"}; do
  [[ "$kv" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env expects KEY=VALUE, got '$kv'"
  exports+="export ${kv%%=*}=$(printf '%q' "${kv#*=}") && "
done
run_dir="$log_root/$run_name"
program="cd $remote_dir && source $remote_venv/bin/activate && ${exports}export PYTHONUNBUFFERED=1 && python -m align_jax.main $(printf '%q ' "$@")"
wrapper="($program); echo \$? > $run_dir/\$(hostname).rc"

on_all_workers "set -euo pipefail; h=\$(hostname); d=$run_dir
  mkdir -p \"\$d\"
  [[ ! -e \"\$d/\$h.pid\" ]] || { echo \"[\$h] run '$run_name' already exists in \$d\" >&2; exit 1; }
  setsid nohup bash -c $(printf '%q' "$wrapper") > \"\$d/\$h.log\" 2>&1 < /dev/null &
  echo \$! > \"\$d/\$h.pid\"
  echo \"[\$h] started process group \$! logging to \$d/\$h.log\""

if ((detach)); then
  echo "Started run '$run_name'. Follow it with: launch/tpu/run.sh --follow $run_name"
  exit 0
fi
follow "$run_name"
