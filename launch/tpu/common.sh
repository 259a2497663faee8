# shellcheck shell=bash
# Helpers shared by the launch/tpu scripts and launch/colab/install.sh. Each script
# sources this file right after its `set -euo pipefail` line:
#   source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# Sourcing it only sets script_name and defines functions; it runs nothing else.

# The name of the script that sourced this file, for error messages.
script_name="${BASH_SOURCE[1]:-$0}"
script_name="${script_name##*/}"

# Prints the script's header comment (line 2 up to `set -euo pipefail`) as its help.
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
die() { echo "$script_name: error: $*" >&2; exit 1; }

# Stops unless every named environment variable is set and not empty.
need_env() {
  local name
  for name in "$@"; do
    [[ -n "${!name:-}" ]] || die "environment variable $name is not set (see --help)"
  done
}
need_gcloud() { command -v gcloud >/dev/null || die "gcloud is not installed or not on PATH"; }

# Remote paths, quoted for the remote shell; relative ones are under the worker's $HOME.
remote_path() {
  case "$1" in
    ""|/|.|..|\~|\~/|*/..) die "refusing to use '$1' as a remote path" ;;
    /*) printf '%q' "$1" ;;
    *) printf '%s/%q' '~' "$1" ;;  # the remote shell expands the tilde
  esac
}

# Reads REMOTE_DIR, REMOTE_VENV and TPU_SSH_FLAGS (needs ZONE and PROJECT_ID) and sets
#   remote_dir, remote_venv   the code and virtual environment on the workers, quoted
#                             for the remote shell
#   worker_flags              the gcloud tpu-vm ssh/scp flags that address every worker
# shellcheck disable=SC2034  # remote_dir and remote_venv are used by the sourcing scripts
workers_init() {
  remote_dir="$(remote_path "${REMOTE_DIR:-align_jax}")"
  remote_venv="$(remote_path "${REMOTE_VENV:-align_jax_venv}")"
  local ssh_flags=()
  read -r -a ssh_flags <<< "${TPU_SSH_FLAGS:-}"
  worker_flags=(--zone="$ZONE" --project="$PROJECT_ID" --worker=all ${ssh_flags[@]+"${ssh_flags[@]}"})
}

# Runs a shell command on every worker of TPU_NAME at once (call workers_init first).
on_all_workers() {
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${worker_flags[@]}" --command="$1"
}

# The jax version setup.py pins (JAX_VERSION overrides it), so that an accelerator's jax
# build matches the one the tests ran with. $1: the repository root.
pinned_jax_version() {
  local version="${JAX_VERSION:-}"
  if [[ -z "$version" ]]; then
    [[ -f "$1/setup.py" ]] || die "no setup.py in $1; set JAX_VERSION"
    version="$(sed -n -E "s/.*[\"']jax(\[[^]]*\])? *== *([0-9][0-9A-Za-z.]*)[\"'].*/\2/p" \
                 "$1/setup.py" | head -n 1)"
    [[ -n "$version" ]] || die "could not find a pinned 'jax==X.Y.Z' in setup.py; set JAX_VERSION"
  fi
  [[ "$version" =~ ^[0-9][0-9A-Za-z.]*$ ]] || die "'$version' does not look like a jax version"
  echo "$version"
}
