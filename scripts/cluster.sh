#!/usr/bin/env bash
# A real single-node Kubernetes on this machine, with the project deployed on it.
#
#   scripts/cluster.sh up [--no-release]   build what is missing, start everything, install the chart
#   scripts/cluster.sh status              what runs, the node, the release
#   scripts/cluster.sh image [cpu|gpu]     only build the project image (engine started) and measure it
#   scripts/cluster.sh down [--keep-images]  stop everything `up` started; remove its images
#   CLUSTER_IMAGE_TAG=local-<id> scripts/cluster.sh up   reuse a loaded image instead of building
#
# Every component is pinned (scripts/cluster/versions.sh) and built from the package registries
# (Go module proxy, Debian, PyPI): Kubernetes from k8s.io/kubernetes, CoreDNS, the pause
# container, prometheus-operator, Prometheus, metrics-server and Jaeger v2 (in namespace
# `observability`: the traces of the release's pods, values-dev.yaml `tracing`); containerd,
# dockerd and etcd from Debian, and a Redis image (local/redis, Debian's redis-server) for the
# chart's cache.redis. The project image is built from ./Dockerfile by the Docker engine and
# imported into the node's containerd. `up` installs release `resnet-serving` into namespace
# `resnet` (Pod Security Standard "restricted" enforced) with values-dev.yaml and
# deploy/local-cluster/values-local.yaml, and returns once it is Ready; the kubeconfig is
# .tools/cluster/kubeconfig. Idempotent: a second `up` only checks (and rolls the release when
# the image changed). Needs root (containerd, the kubelet, iptables). Everything is logged to
# .tools/cluster/logs/. docs/DEPLOYMENT.md ("Try it on a local cluster") has the details.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export PATH="$ROOT/.tools/bin:$PATH"

# shellcheck source=scripts/cluster/versions.sh
source scripts/cluster/versions.sh
# shellcheck source=scripts/cluster/lib.sh
source scripts/cluster/lib.sh
# shellcheck source=scripts/cluster/build.sh
source scripts/cluster/build.sh
# shellcheck source=scripts/cluster/engine.sh
source scripts/cluster/engine.sh
# shellcheck source=scripts/cluster/images.sh
source scripts/cluster/images.sh
# shellcheck source=scripts/cluster/node.sh
source scripts/cluster/node.sh
# shellcheck source=scripts/cluster/monitoring.sh
source scripts/cluster/monitoring.sh
# shellcheck source=scripts/cluster/tracing.sh
source scripts/cluster/tracing.sh

RELEASE=resnet-serving
NAMESPACE=resnet
NODE_NAME=$(hostname | tr '[:upper:]' '[:lower:]')
# The chart as installed here: a copy with an empty stand-in for the kube-prometheus-stack
# dependency (switched off by values-local.yaml; its chart cannot be fetched here). The e2e
# suite upgrades and rolls back this same copy.
CHART_COPY=$CLUSTER_DIR/chart
RELEASE_TIMEOUT=${RELEASE_TIMEOUT:-10m}

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

require_root() { [ "$(id -u)" -eq 0 ] || die "run as root (containerd, the kubelet and iptables need it)"; }

prepare_chart() {
  rm -rf "$CHART_COPY"
  # -L: the chart's dashboards/ is a symlink to the repository's dashboards/.
  cp -RL "$ROOT/charts/resnet-serving" "$CHART_COPY"
  local version
  version=$(awk '/name: kube-prometheus-stack/ { found = 1 } found && /version:/ { gsub(/[^0-9.]/, "", $2); print $2; exit }' \
    "$CHART_COPY/Chart.yaml")
  mkdir -p "$CHART_COPY/charts/kube-prometheus-stack"
  printf 'apiVersion: v2\nname: kube-prometheus-stack\nversion: %s\ndescription: empty stand-in (scripts/cluster.sh)\n' \
    "$version" >"$CHART_COPY/charts/kube-prometheus-stack/Chart.yaml"
}

deploy_dns() {
  # shellcheck disable=SC2016  # envsubst's list of variables to replace, not an expansion
  COREDNS_IMAGE=$COREDNS_IMAGE CLUSTER_DNS_IP=$CLUSTER_DNS_IP \
    envsubst '${COREDNS_IMAGE} ${CLUSTER_DNS_IP}' <"$ROOT/deploy/local-cluster/coredns.yaml" \
    | kubectl_ apply -f - >/dev/null
  kubectl_ -n kube-system rollout status deployment/coredns --timeout=120s >/dev/null \
    || die "CoreDNS did not become ready (kubectl -n kube-system describe pod -l k8s-app=kube-dns)"
}

install_release() {
  local tag=$1
  kubectl_ create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl_ apply -f - >/dev/null
  kubectl_ label namespace "$NAMESPACE" --overwrite >/dev/null \
    pod-security.kubernetes.io/enforce=restricted pod-security.kubernetes.io/warn=restricted
  prepare_chart
  log "helm upgrade --install $RELEASE (image $PROJECT_IMAGE_REPOSITORY:$tag)"
  helm --kubeconfig "$KUBECONFIG_FILE" upgrade --install "$RELEASE" "$CHART_COPY" -n "$NAMESPACE" \
    -f "$ROOT/values-dev.yaml" -f "$ROOT/deploy/local-cluster/values-local.yaml" \
    --set image.tag="$tag" --wait --timeout "$RELEASE_TIMEOUT" >"$CLUSTER_LOGS/helm.log" 2>&1 \
    || { cat "$CLUSTER_LOGS/helm.log" >&2; die "the release did not become Ready (kubectl -n $NAMESPACE get pods)"; }
}

cmd_up() {
  local release=1
  [ "${1:-}" = --no-release ] && release=0
  require_root
  mkdir -p "$CLUSTER_BIN" "$CLUSTER_LOGS" "$CLUSTER_RUN" "$CLUSTER_BUILD"
  local started=$SECONDS
  ensure_packages
  [ -x "$HELM" ] || { log "helm is missing: running scripts/install.sh"; scripts/install.sh; }
  build_kubernetes
  build_pause
  build_coredns
  monitoring_build
  tracing_build
  engine_up
  base_images
  system_images
  redis_image
  nginx_image
  monitoring_images
  tracing_images
  local tag=""
  if [ "$release" = 1 ]; then
    # CLUSTER_IMAGE_TAG: reuse an image already built and loaded (local/resnet-serving:<tag>).
    tag=${CLUSTER_IMAGE_TAG:-}
    [ -n "$tag" ] || tag=$(project_image)
    load_project_image "$tag"
    canary_image
  fi
  node_up
  deploy_dns
  monitoring_deploy
  tracing_deploy
  if [ "$release" = 1 ]; then
    install_release "$tag"
  fi
  log "up in $((SECONDS - started))s; kubeconfig: $KUBECONFIG_FILE"
  cmd_status
}

cmd_image() {
  local target=${1:-cpu}
  case $target in cpu | gpu) ;; *) die "image: cpu or gpu, not $target" ;; esac
  require_root
  mkdir -p "$CLUSTER_LOGS" "$CLUSTER_RUN" "$CLUSTER_BUILD"
  ensure_packages
  engine_up
  base_images
  project_image "$target"
}

cmd_status() {
  local name state rc=0
  for name in containerd dockerd "${NODE_DAEMONS[@]}"; do
    if running "$name"; then state="running (pid $(cat "$CLUSTER_LOGS/$name.pid"))"; else state="not running"; rc=1; fi
    printf '%-24s %s\n' "$name" "$state"
  done
  if [ -f "$KUBECONFIG_FILE" ] && kubectl_ get --raw /readyz >/dev/null 2>&1; then
    printf '%-24s %s\n' "node $NODE_NAME" "$(node_ready && echo Ready || echo NotReady)"
    monitoring_status || rc=1
    tracing_status || rc=1
    if helm --kubeconfig "$KUBECONFIG_FILE" status "$RELEASE" -n "$NAMESPACE" >/dev/null 2>&1; then
      printf '%-24s %s\n' "release $RELEASE" \
        "$(kubectl_ -n "$NAMESPACE" get deployment -l app.kubernetes.io/instance="$RELEASE",app.kubernetes.io/component=server \
          -o jsonpath='{range .items[*]}{.status.readyReplicas}/{.spec.replicas} ready{end}')"
    else
      printf '%-24s %s\n' "release $RELEASE" "not installed"
    fi
  else
    printf '%-24s %s\n' apiserver "not answering"
    rc=1
  fi
  return "$rc"
}

cmd_down() {
  local keep=0
  [ "${1:-}" = --keep-images ] && keep=1
  require_root
  node_down
  if [ "$keep" = 0 ] && ctr version >/dev/null 2>&1; then
    remove_images
  fi
  engine_down
  rm -f "$KUBECONFIG_FILE"
  rm -rf "$CHART_COPY" "$CLUSTER_BUILD"
  log "down: nothing started by scripts/cluster.sh is running"
}

case ${1:-} in
  up) shift; cmd_up "$@" ;;
  down) shift; cmd_down "$@" ;;
  status) cmd_status ;;
  image) shift; cmd_image "$@" ;;
  *) usage ;;
esac
