#!/usr/bin/env bash
# Request a Cloud TPU VM slice through a queued resource and wait until it is ACTIVE.
#
# Usage:
#   launch/tpu/create.sh [options]
#
# Environment (required):
#   PROJECT_ID         Google Cloud project that pays for the TPUs
#   ZONE               zone to create the slice in (must offer the accelerator type)
#   TPU_NAME           name of both the queued resource and the TPU node
#   ACCELERATOR_TYPE   e.g. v4-8, v5p-64, v5litepod-256 (or pass --accelerator-type)
# Environment (optional):
#   RUNTIME_VERSION    TPU VM image; by default picked from the accelerator generation
#   TPU_POLL_SECONDS   seconds between checks of the request's state (default 30)
#
# Options:
#   --accelerator-type TYPE   overrides ACCELERATOR_TYPE
#   --runtime-version VER     overrides RUNTIME_VERSION
#   --spot                    Spot capacity: cheaper, can be preempted at any time
#   --best-effort             best-effort capacity (uses `gcloud alpha`), can be preempted
#   --reserved                use the project's reserved capacity
#   --valid-until DURATION    give up if not granted within DURATION (e.g. 6h, 2d)
#   --no-wait                 return once the request is queued
#   --timeout SECONDS         stop waiting after SECONDS (default: wait indefinitely)
#   -h, --help                show this help
#
# Example:
#   export PROJECT_ID=my-project ZONE=us-central2-b TPU_NAME=align-v4 ACCELERATOR_TYPE=v4-8
#   launch/tpu/create.sh --spot
set -euo pipefail

# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

accelerator_type="${ACCELERATOR_TYPE:-}"
runtime_version="${RUNTIME_VERSION:-}"
capacity=""
valid_until=""
wait_for_active=1
timeout_s=0

while (($#)); do
  case "$1" in
    --accelerator-type) accelerator_type="${2:?--accelerator-type needs a value}"; shift 2 ;;
    --accelerator-type=*) accelerator_type="${1#*=}"; shift ;;
    --runtime-version) runtime_version="${2:?--runtime-version needs a value}"; shift 2 ;;
    --runtime-version=*) runtime_version="${1#*=}"; shift ;;
    --spot|--best-effort|--reserved)
      [[ -z "$capacity" ]] || die "choose only one of --spot, --best-effort, --reserved"
      capacity="$1"; shift ;;
    --valid-until) valid_until="${2:?--valid-until needs a value}"; shift 2 ;;
    --valid-until=*) valid_until="${1#*=}"; shift ;;
    --no-wait) wait_for_active=0; shift ;;
    --timeout) timeout_s="${2:?--timeout needs a value}"; shift 2 ;;
    --timeout=*) timeout_s="${1#*=}"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

need_env PROJECT_ID ZONE TPU_NAME
[[ -n "$accelerator_type" ]] || die "set ACCELERATOR_TYPE or pass --accelerator-type (e.g. v4-8)"
[[ "$timeout_s" =~ ^[0-9]+$ ]] || die "--timeout must be a whole number of seconds"
poll_s="${TPU_POLL_SECONDS:-30}"
[[ "$poll_s" =~ ^[0-9]+$ ]] || die "TPU_POLL_SECONDS must be a whole number of seconds"
need_gcloud

if [[ -z "$runtime_version" ]]; then
  # Default TPU VM images per generation; pass --runtime-version to pick another.
  case "$accelerator_type" in
    v4-*) runtime_version="tpu-ubuntu2204-base" ;;
    v5litepod-*) runtime_version="v2-alpha-tpuv5-lite" ;;
    v5p-*) runtime_version="v2-alpha-tpuv5" ;;
    v6e-*) runtime_version="v2-alpha-tpuv6e" ;;
    *) die "no default runtime version for '$accelerator_type'; set RUNTIME_VERSION" ;;
  esac
fi

gcloud_qr=(gcloud compute tpus queued-resources)
create_flags=()
case "$capacity" in
  --best-effort) gcloud_qr=(gcloud alpha compute tpus queued-resources); create_flags+=(--best-effort) ;;
  --spot|--reserved) create_flags+=("$capacity") ;;
esac
[[ -z "$valid_until" ]] || create_flags+=(--valid-until-duration="$valid_until")

echo "Requesting $accelerator_type ($runtime_version) as '$TPU_NAME' in $ZONE, project $PROJECT_ID${capacity:+, $capacity}"
"${gcloud_qr[@]}" create "$TPU_NAME" \
  --node-id="$TPU_NAME" \
  --accelerator-type="$accelerator_type" \
  --runtime-version="$runtime_version" \
  --zone="$ZONE" \
  --project="$PROJECT_ID" \
  ${create_flags[@]+"${create_flags[@]}"}

if ((!wait_for_active)); then
  echo "Queued. Check progress with:"
  echo "  gcloud compute tpus queued-resources describe $TPU_NAME --zone=$ZONE --project=$PROJECT_ID"
  exit 0
fi

start=$SECONDS
last=""
while true; do
  state="$(gcloud compute tpus queued-resources describe "$TPU_NAME" \
             --zone="$ZONE" --project="$PROJECT_ID" --format='value(state.state)' 2>/dev/null || true)"
  if [[ "$state" != "$last" ]]; then
    echo "$(date '+%H:%M:%S') state: ${state:-unknown}"
    last="$state"
  fi
  case "$state" in
    ACTIVE)
      echo "TPU '$TPU_NAME' is ready. Next: launch/tpu/setup.sh"
      exit 0 ;;
    FAILED|SUSPENDED|SUSPENDING|DELETING)
      gcloud compute tpus queued-resources describe "$TPU_NAME" --zone="$ZONE" --project="$PROJECT_ID" >&2 || true
      die "queued resource '$TPU_NAME' is $state; delete it with launch/tpu/teardown.sh" ;;
  esac
  if ((timeout_s > 0 && SECONDS - start >= timeout_s)); then
    die "still '${state:-unknown}' after ${timeout_s}s; the request stays queued (teardown.sh removes it)"
  fi
  sleep "$poll_s"
done
