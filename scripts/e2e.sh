#!/usr/bin/env bash
# The deployment, proven on a real cluster: `scripts/cluster.sh up` (image built from the
# Dockerfile, the chart installed), the e2e suite (tests/e2e, pytest -m e2e), then
# `scripts/cluster.sh down`, whatever happened. Exits with the suite's status.
# Figures: bench/results/e2e.json (the suite's, plus the set-up's: time to a Ready release,
# image size, disk). E2E_KEEP=1 leaves the cluster running afterwards (for debugging);
# E2E_KEEP_IMAGES=1 keeps the images in containerd on the way down. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CLUSTER_DIR=$ROOT/.tools/cluster
SETUP_JSON=$CLUSTER_DIR/e2e-setup.json
# Hard bounds: a hung step fails with a message instead of holding CI.
UP_TIMEOUT=${E2E_UP_TIMEOUT:-45m}
SUITE_TIMEOUT=${E2E_SUITE_TIMEOUT:-60m}

log() { printf '\033[1m==> [e2e] %s\033[0m\n' "$*" >&2; }

[ -x .venv/bin/pytest ] || { log "no .venv: running scripts/install.sh"; scripts/install.sh; }

# shellcheck disable=SC2317  # runs from the EXIT trap
down() {
  local rc=$?
  if [ "${E2E_KEEP:-0}" = 1 ]; then
    log "E2E_KEEP=1: the cluster stays up (scripts/cluster.sh down to stop it)"
  else
    scripts/cluster.sh down ${E2E_KEEP_IMAGES:+--keep-images} || log "cluster.sh down failed"
  fi
  exit "$rc"
}
trap down EXIT

used_kib() { df -k --output=used / | tail -1; }
disk_before=$(used_kib)
started=$SECONDS
log "scripts/cluster.sh up (at most $UP_TIMEOUT)"
timeout --foreground "$UP_TIMEOUT" scripts/cluster.sh up \
  || { log "cluster.sh up failed or timed out after $UP_TIMEOUT (logs: $CLUSTER_DIR/logs)"; exit 1; }
up_seconds=$((SECONDS - started))
disk_after=$(used_kib)
tag=$(.tools/cluster/bin/kubectl --kubeconfig "$CLUSTER_DIR/kubeconfig" -n resnet get deployment \
  -l app.kubernetes.io/instance=resnet-serving -o jsonpath='{.items[0].spec.template.spec.containers[0].image}')
image_bytes=$(/usr/bin/docker image inspect -f '{{.Size}}' "$tag" 2>/dev/null || echo null)
# Measured by cluster.sh when it built the image (docker save | gzip); null when it reused one.
compressed=$(jq '.compressed_bytes' "$CLUSTER_DIR/image-cpu.json" 2>/dev/null || echo null)
cat >"$SETUP_JSON" <<JSON
{"cluster_up_seconds": $up_seconds, "image": "$tag", "image_bytes": $image_bytes,
 "image_compressed_bytes": ${compressed:-null},
 "disk_used_by_up_gib": $(awk -v a="$disk_before" -v b="$disk_after" 'BEGIN { printf "%.1f", (b - a) / 1048576 }'),
 "disk_used_total_gib": $(awk -v b="$disk_after" 'BEGIN { printf "%.1f", b / 1048576 }')}
JSON
log "cluster up in ${up_seconds}s; running the e2e suite (at most $SUITE_TIMEOUT)"
set +e
# The A/B test's canary: the image of another model that cluster.sh built (test_10_ab.py).
E2E_CANARY_IMAGE_TAG=${E2E_CANARY_IMAGE_TAG:-$(cat "$CLUSTER_DIR/canary-image-tag" 2>/dev/null || true)}
export E2E_CANARY_IMAGE_TAG
E2E_KUBECONFIG=$CLUSTER_DIR/kubeconfig E2E_CHART=$CLUSTER_DIR/chart E2E_SETUP_JSON=$SETUP_JSON \
  timeout --foreground "$SUITE_TIMEOUT" .venv/bin/pytest tests/e2e -m e2e -p no:cacheprovider -v "$@"
rc=$?
set -e
[ "$rc" = 124 ] && log "the e2e suite timed out after $SUITE_TIMEOUT"
exit "$rc"
