#!/usr/bin/env bash
# Install align_jax on every worker of a TPU slice created by create.sh.
#
# The code reaches the workers in one of two ways:
#   * from git: every worker clones ALIGN_JAX_GIT_URL (or --git-url) at --git-ref;
#   * by default: a tarball of this checkout made with `git archive` is copied to
#     every worker (committed files only; add --include-uncommitted to also ship
#     uncommitted edits of tracked files).
# Each worker then gets a virtual environment (REMOTE_VENV) holding
# `pip install -e .` and the jax[tpu] release that setup.py pins.
# Running setup.sh again replaces the code and updates the environment.
#
# Usage:
#   launch/tpu/setup.sh [options]
#
# Environment (required):
#   PROJECT_ID, ZONE, TPU_NAME   as for create.sh
# Environment (optional):
#   ALIGN_JAX_GIT_URL   clone from this URL instead of copying a tarball
#   JAX_VERSION         override the jax version read from setup.py
#   REMOTE_DIR          code location on the workers (default: align_jax; relative
#                       paths are under the worker's $HOME)
#   REMOTE_VENV         virtual environment on the workers (default: align_jax_venv)
#   REMOTE_PYTHON       interpreter for the environment (default: newest python3.11+ found)
#   TPU_SSH_FLAGS       extra flags for `gcloud compute tpus tpu-vm ssh/scp`,
#                       e.g. "--internal-ip" (from a machine inside the VPC)
#
# Options:
#   --git-url URL            clone from URL (overrides ALIGN_JAX_GIT_URL)
#   --git-ref REF            branch, tag or commit to check out / archive (default: HEAD,
#                            or the remote's default branch when cloning)
#   --include-uncommitted    tarball mode: include uncommitted changes to tracked files
#   --no-check               skip the final check that JAX sees the TPU devices
#   -h, --help               show this help
set -euo pipefail

# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

git_url="${ALIGN_JAX_GIT_URL:-}"
git_ref=""
include_uncommitted=0
check=1
while (($#)); do
  case "$1" in
    --git-url) git_url="${2:?--git-url needs a value}"; shift 2 ;;
    --git-url=*) git_url="${1#*=}"; shift ;;
    --git-ref) git_ref="${2:?--git-ref needs a value}"; shift 2 ;;
    --git-ref=*) git_ref="${1#*=}"; shift ;;
    --include-uncommitted) include_uncommitted=1; shift ;;
    --no-check) check=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

need_env PROJECT_ID ZONE TPU_NAME
need_gcloud

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
workers_init

# The jax version pinned in setup.py, so the TPU build matches what tests ran with.
jax_version="$(pinned_jax_version "$repo_root")"
echo "Setting up '$TPU_NAME' with jax[tpu]==$jax_version"

# Ship the code.
if [[ -n "$git_url" ]]; then
  fetch_code="rm -rf $remote_dir && git clone --quiet $(printf '%q' "$git_url") $remote_dir"
  if [[ -n "$git_ref" ]]; then
    fetch_code+=" && git -C $remote_dir checkout --quiet $(printf '%q' "$git_ref")"
  fi
else
  command -v git >/dev/null || die "git is needed to build the tarball"
  ref="${git_ref:-HEAD}"
  if ((include_uncommitted)); then
    stash="$(git -C "$repo_root" stash create)"
    ref="${stash:-$ref}"
  fi
  git -C "$repo_root" rev-parse --verify --quiet "$ref^{commit}" >/dev/null \
    || die "'$ref' is not a commit in $repo_root (commit your work, or use --git-url)"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  tarball="$tmp/align_jax.tar.gz"
  git -C "$repo_root" archive --format=tar.gz -o "$tarball" "$ref"
  echo "Copying $(du -h "$tarball" | cut -f1) archive of $ref to all workers"
  gcloud compute tpus tpu-vm scp "$tarball" "$TPU_NAME:align_jax.tar.gz" "${worker_flags[@]}"
  fetch_code="rm -rf $remote_dir && mkdir -p $remote_dir && tar -xzf ~/align_jax.tar.gz -C $remote_dir && rm -f ~/align_jax.tar.gz"
fi

# Runs on every worker.
remote_script=$(cat <<REMOTE
set -euo pipefail
$fetch_code
python_bin=$(printf '%q' "${REMOTE_PYTHON:-}")
if [[ -z "\$python_bin" ]]; then
  for candidate in python3.13 python3.12 python3.11; do
    if command -v "\$candidate" >/dev/null; then python_bin="\$candidate"; break; fi
  done
fi
if [[ -z "\$python_bin" ]]; then
  echo "no python3.11+ on \$(hostname); installing python3.11 with apt" >&2
  sudo apt-get update -qq
  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3.11 python3.11-venv
  python_bin=python3.11
fi
if ! "\$python_bin" -c 'import ensurepip, venv' 2>/dev/null; then
  sudo apt-get update -qq
  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "\$(basename "\$python_bin")-venv"
fi
[[ -x $remote_venv/bin/python ]] || "\$python_bin" -m venv $remote_venv
source $remote_venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -e $remote_dir "jax[tpu]==$jax_version"
echo "\$(hostname): installed align_jax with \$(python -c 'import jax; print("jax", jax.__version__)')"
REMOTE
)
on_all_workers "$remote_script"

if ((check)); then
  # All workers must start JAX together on a multi-host slice, so this runs everywhere at once.
  check_script="source $remote_venv/bin/activate && timeout 600 python -c 'import jax; print(jax.process_index(), \"sees\", jax.local_device_count(), \"local /\", jax.device_count(), \"global TPU devices\")'"
  on_all_workers "$check_script"
fi
echo "Done. Next: launch/tpu/run.sh -- --gin_file=..."
