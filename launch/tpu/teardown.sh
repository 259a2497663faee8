#!/usr/bin/env bash
# Delete the queued resource created by create.sh, together with its TPU VMs.
# Everything on the VMs' disks is lost; copy results off first.
#
# Usage:
#   launch/tpu/teardown.sh [--yes] [--async]
#
# Environment (required):
#   PROJECT_ID, ZONE, TPU_NAME   as for create.sh
#
# Options:
#   -y, --yes    do not ask for confirmation
#   --async      return without waiting for the deletion to finish
#   -h, --help   show this help
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
die() { echo "teardown.sh: error: $*" >&2; exit 1; }

assume_yes=0
async_flag=()
while (($#)); do
  case "$1" in
    -y|--yes) assume_yes=1; shift ;;
    --async) async_flag=(--async); shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

for name in PROJECT_ID ZONE TPU_NAME; do
  [[ -n "${!name:-}" ]] || die "environment variable $name is not set (see --help)"
done
command -v gcloud >/dev/null || die "gcloud is not installed or not on PATH"

if ((!assume_yes)); then
  [[ -t 0 ]] || die "not a terminal; pass --yes to delete without confirmation"
  read -r -p "Delete queued resource '$TPU_NAME' and its TPU VMs (zone $ZONE, project $PROJECT_ID)? [y/N] " answer
  [[ "$answer" =~ ^[Yy]([Ee][Ss])?$ ]] || { echo "Aborted."; exit 1; }
fi

# --force also deletes the TPU node the queued resource holds.
gcloud compute tpus queued-resources delete "$TPU_NAME" \
  --zone="$ZONE" --project="$PROJECT_ID" --force --quiet ${async_flag[@]+"${async_flag[@]}"}
echo "Deleted '$TPU_NAME'."
