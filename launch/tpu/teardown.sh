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

# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

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

need_env PROJECT_ID ZONE TPU_NAME
need_gcloud

if ((!assume_yes)); then
  [[ -t 0 ]] || die "not a terminal; pass --yes to delete without confirmation"
  read -r -p "Delete queued resource '$TPU_NAME' and its TPU VMs (zone $ZONE, project $PROJECT_ID)? [y/N] " answer
  [[ "$answer" =~ ^[Yy]([Ee][Ss])?$ ]] || { echo "Aborted."; exit 1; }
fi

# --force also deletes the TPU node the queued resource holds.
gcloud compute tpus queued-resources delete "$TPU_NAME" \
  --zone="$ZONE" --project="$PROJECT_ID" --force --quiet ${async_flag[@]+"${async_flag[@]}"}
echo "Deleted '$TPU_NAME'."
