# shellcheck shell=bash
# Monitoring stand-in for kube-prometheus-stack (its chart cannot be fetched here): the same
# prometheus-operator release that chart ships, the Prometheus it runs by default, and
# metrics-server, each built from its pinned Go module into a scratch image.
# Sourced by scripts/cluster.sh after versions.sh and lib.sh; `up` calls, in this order:
#   monitoring_build   static binaries into .tools/cluster/bin (stamped: a second run is a no-op)
#   monitoring_images  scratch images local/<name>:<version>, loaded into containerd (k8s.io)
#   monitoring_deploy  CRDs, operator, a Prometheus selecting `release: resnet-serving` in all
#                      namespaces (as kube-prometheus-stack's does: `release: <its helm
#                      release>`, the label the chart sets), metrics-server; waits until ready
# and `status` calls monitoring_status (one line per component).
# Manifests: deploy/local-cluster/monitoring/*.yaml (image tags are filled in here).

MON_MANIFESTS=$ROOT/deploy/local-cluster/monitoring
MON_NAMESPACE=monitoring

MON_OPERATOR_MODULE=github.com/prometheus-operator/prometheus-operator
MON_PROMETHEUS_MODULE=github.com/prometheus/prometheus
MON_METRICS_SERVER_MODULE=sigs.k8s.io/metrics-server

MON_OPERATOR_IMAGE=local/prometheus-operator:$PROMETHEUS_OPERATOR_VERSION
MON_RELOADER_IMAGE=local/prometheus-config-reloader:$PROMETHEUS_OPERATOR_VERSION
MON_PROMETHEUS_IMAGE=local/prometheus:$PROMETHEUS_VERSION
MON_METRICS_SERVER_IMAGE=local/metrics-server:$METRICS_SERVER_VERSION

# _mon_go_build DIR OUT LDFLAGS TAGS PKG...: a static, trimmed build of PKG(s) in module DIR.
# With one PKG, OUT is the binary; with several, OUT is a directory (one binary per package).
# GOWORK=off: prometheus' module ships a go.work naming nested modules that its zip leaves out.
_mon_go_build() {
  local dir=$1 out=$2 ldflags=$3 tags=$4
  shift 4
  (cd "$dir" && CGO_ENABLED=0 GOWORK=off GOFLAGS=-buildvcs=false go build -trimpath -tags "$tags" \
    -ldflags "-s -w $ldflags" -o "$out" "$@") || die "go build $* in $dir failed"
}

# prometheus-operator and prometheus-config-reloader (one module, one build). Its go.mod
# replaces pkg/apis/monitoring and pkg/client with ./pkg/..., nested modules that the module
# zip leaves out: a copy with the replaces dropped requires their published releases instead.
_mon_build_operator() {
  local v=$PROMETHEUS_OPERATOR_VERSION src=$CLUSTER_BUILD/prometheus-operator out start=$SECONDS
  local common=github.com/prometheus/common/version sub
  log "building prometheus-operator + prometheus-config-reloader $v (module $MON_OPERATOR_MODULE)"
  module_copy "$MON_OPERATOR_MODULE@$v" "$src"
  for sub in pkg/apis/monitoring pkg/client; do
    (cd "$src" && go mod edit -dropreplace="$MON_OPERATOR_MODULE/$sub" \
      -require="$MON_OPERATOR_MODULE/$sub@$v") || die "go mod edit in $src failed"
  done
  # go.sum lacks the published sub-modules' sums: fetch them (checksum-verified).
  (cd "$src" && GOFLAGS=-mod=mod go mod download "$MON_OPERATOR_MODULE/pkg/apis/monitoring" \
    "$MON_OPERATOR_MODULE/pkg/client" && GOFLAGS=-mod=mod go list -deps ./cmd/operator \
    ./cmd/prometheus-config-reloader >/dev/null) || die "resolving $MON_OPERATOR_MODULE deps failed"
  out=$CLUSTER_BUILD/prometheus-operator.out
  rm -rf "$out" && mkdir -p "$out"
  _mon_go_build "$src" "$out/" "-X $common.Version=${v#v} -X $common.Branch=HEAD \
    -X $common.BuildUser=local-cluster" "" ./cmd/operator ./cmd/prometheus-config-reloader
  mv -f "$out/operator" "$CLUSTER_BIN/prometheus-operator"
  mv -f "$out/prometheus-config-reloader" "$CLUSTER_BIN/prometheus-config-reloader"
  rm -rf "$src" "$out"
  stamp prometheus-operator "$v"
  stamp prometheus-config-reloader "$v"
  log "built prometheus-operator + prometheus-config-reloader $v in $((SECONDS - start))s"
}

# prometheus: straight from the (read-only) module cache. Only the Kubernetes service discovery
# (the operator generates kubernetes_sd_configs only): remove_all_sd + enable_kubernetes_sd cut
# the cloud SDKs out of the build. No builtinassets: the web UI's assets are not in the module
# (built by npm); the HTTP API, which is what the cluster uses, does not need them.
_mon_build_prometheus() {
  local v=$PROMETHEUS_VERSION dir start=$SECONDS tmp=$CLUSTER_BIN/.prometheus.tmp
  local common=github.com/prometheus/common/version
  log "building prometheus $v (module $MON_PROMETHEUS_MODULE@$PROMETHEUS_MODULE_VERSION)"
  dir=$(module_dir "$MON_PROMETHEUS_MODULE@$PROMETHEUS_MODULE_VERSION")
  _mon_go_build "$dir" "$tmp" "-X $common.Version=${v#v} -X $common.Branch=HEAD \
    -X $common.BuildUser=local-cluster" "netgo remove_all_sd enable_kubernetes_sd" ./cmd/prometheus
  mv -f "$tmp" "$CLUSTER_BIN/prometheus"
  stamp prometheus "$v/$PROMETHEUS_MODULE_VERSION"
  log "built prometheus $v in $((SECONDS - start))s"
}

# metrics-server: straight from the module cache; its version is client-go's pkg/version (what
# its Makefile sets, and what the APIService's /version reports).
_mon_build_metrics_server() {
  local v=$METRICS_SERVER_VERSION dir start=$SECONDS tmp=$CLUSTER_BIN/.metrics-server.tmp
  local pv=k8s.io/client-go/pkg/version
  log "building metrics-server $v (module $MON_METRICS_SERVER_MODULE)"
  dir=$(module_dir "$MON_METRICS_SERVER_MODULE@$v")
  _mon_go_build "$dir" "$tmp" "-X $pv.gitVersion=$v -X $pv.gitCommit=unknown \
    -X $pv.buildDate=1970-01-01T00:00:00Z" "" ./cmd/metrics-server
  mv -f "$tmp" "$CLUSTER_BIN/metrics-server"
  stamp metrics-server "$v"
  log "built metrics-server $v in $((SECONDS - start))s"
}

monitoring_build() {
  mkdir -p "$CLUSTER_BIN" "$CLUSTER_BUILD"
  if stamped prometheus-operator "$PROMETHEUS_OPERATOR_VERSION" \
    && stamped prometheus-config-reloader "$PROMETHEUS_OPERATOR_VERSION"; then
    log "prometheus-operator $PROMETHEUS_OPERATOR_VERSION already built"
  else
    _mon_build_operator
  fi
  if stamped prometheus "$PROMETHEUS_VERSION/$PROMETHEUS_MODULE_VERSION"; then
    log "prometheus $PROMETHEUS_VERSION already built"
  else
    _mon_build_prometheus
  fi
  if stamped metrics-server "$METRICS_SERVER_VERSION"; then
    log "metrics-server $METRICS_SERVER_VERSION already built"
  else
    _mon_build_metrics_server
  fi
}

monitoring_images() {
  binary_image "$MON_OPERATOR_IMAGE" prometheus-operator
  binary_image "$MON_RELOADER_IMAGE" prometheus-config-reloader
  binary_image "$MON_PROMETHEUS_IMAGE" prometheus
  binary_image "$MON_METRICS_SERVER_IMAGE" metrics-server
}

# _mon_apply FILE: server-side apply one manifest of deploy/local-cluster/monitoring with the
# pinned versions filled in (idempotent: a second `up` re-applies the same objects).
_mon_apply() {
  sed -e "s|@OPERATOR_VERSION@|$PROMETHEUS_OPERATOR_VERSION|g" \
    -e "s|@PROMETHEUS_VERSION@|$PROMETHEUS_VERSION|g" \
    -e "s|@METRICS_SERVER_VERSION@|$METRICS_SERVER_VERSION|g" "$MON_MANIFESTS/$1" \
    | kubectl_ apply --server-side --force-conflicts --field-manager=local-cluster -f - >/dev/null \
    || die "kubectl apply $MON_MANIFESTS/$1 failed"
}

# _mon_wait SECONDS WHAT DIAG CMD...: wait_for, and on a timeout print DIAG's output (a
# function naming the pods and events that explain it) before failing.
_mon_wait() {
  local seconds=$1 what=$2 diag=$3
  shift 3
  if ! (wait_for "$seconds" "$what" "$@"); then
    "$diag" >&2 || true
    die "monitoring: $what did not happen within ${seconds}s"
  fi
}

_mon_diag_ns() {
  kubectl_ -n "$1" get deploy,statefulset,pods -o wide ${2:+-l "$2"} 2>&1
  kubectl_ -n "$1" get events --sort-by=.lastTimestamp 2>&1 | tail -n 15
}
_mon_diag_operator() {
  _mon_diag_ns "$MON_NAMESPACE" app.kubernetes.io/name=prometheus-operator
  kubectl_ -n "$MON_NAMESPACE" logs deployment/prometheus-operator --tail=20 2>&1
}
_mon_diag_prometheus() {
  kubectl_ -n "$MON_NAMESPACE" get prometheus prometheus -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason} {.message}{"\n"}{end}' 2>&1
  _mon_diag_ns "$MON_NAMESPACE"
  kubectl_ -n "$MON_NAMESPACE" logs statefulset/prometheus-prometheus -c prometheus --tail=20 2>&1
}
_mon_diag_metrics_server() {
  kubectl_ get apiservice v1beta1.metrics.k8s.io -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason} {.message}{"\n"}{end}' 2>&1
  _mon_diag_ns kube-system k8s-app=metrics-server
  kubectl_ -n kube-system logs deployment/metrics-server --tail=20 2>&1
}

# monitoring_prometheus_url: Prometheus' address for the host (its Service's ClusterIP).
monitoring_prometheus_url() {
  local ip
  ip=$(kubectl_ -n "$MON_NAMESPACE" get service prometheus -o jsonpath='{.spec.clusterIP}' 2>/dev/null) \
    && [ -n "$ip" ] && echo "http://$ip:9090"
}
_mon_prometheus_answers() {
  local url
  url=$(monitoring_prometheus_url) && curl -fs --max-time 3 "$url/-/ready" >/dev/null
}
_mon_top_nodes() { kubectl_ top nodes --no-headers 2>/dev/null | grep -q .; }

monitoring_deploy() {
  local crds start=$SECONDS
  crds=$(module_dir "$MON_OPERATOR_MODULE@$PROMETHEUS_OPERATOR_VERSION")/example/prometheus-operator-crd
  log "monitoring: prometheus-operator $PROMETHEUS_OPERATOR_VERSION CRDs (server-side apply)"
  kubectl_ apply --server-side --force-conflicts --field-manager=local-cluster -f "$crds" >/dev/null \
    || die "applying the prometheus-operator CRDs from $crds failed"
  wait_for 60 "the monitoring.coreos.com CRDs to be Established" \
    kubectl_ wait --for=condition=Established --timeout=5s -f "$crds"

  log "monitoring: namespace $MON_NAMESPACE, prometheus-operator, Prometheus, metrics-server"
  _mon_apply namespace.yaml
  _mon_apply operator.yaml
  _mon_apply prometheus.yaml
  _mon_apply metrics-server.yaml

  _mon_wait 120 "the prometheus-operator Deployment to be Ready" _mon_diag_operator \
    kubectl_ -n "$MON_NAMESPACE" rollout status deployment/prometheus-operator --timeout=5s
  log "monitoring: prometheus-operator ready"
  _mon_wait 180 "the Prometheus pod (statefulset prometheus-prometheus) to be Ready" \
    _mon_diag_prometheus kubectl_ -n "$MON_NAMESPACE" wait --for=condition=Ready --timeout=5s \
    pod -l operator.prometheus.io/name=prometheus
  _mon_wait 60 "Prometheus to answer /-/ready on its Service" _mon_diag_prometheus \
    _mon_prometheus_answers
  log "monitoring: Prometheus $PROMETHEUS_VERSION ready at $(monitoring_prometheus_url)"
  _mon_wait 120 "the metrics-server Deployment to be Ready" _mon_diag_metrics_server \
    kubectl_ -n kube-system rollout status deployment/metrics-server --timeout=5s
  _mon_wait 60 "APIService v1beta1.metrics.k8s.io to be Available" _mon_diag_metrics_server \
    kubectl_ wait --for=condition=Available --timeout=5s apiservice/v1beta1.metrics.k8s.io
  _mon_wait 120 "\`kubectl top nodes\` to return data (metrics-server's first scrapes)" \
    _mon_diag_metrics_server _mon_top_nodes
  log "monitoring: metrics-server ready (kubectl top nodes answers); monitoring up in $((SECONDS - start))s"
}

# monitoring_status: one line per component (as cluster.sh's status: name, then state); fails
# when one is not ready.
monitoring_status() {
  local ready rc=0
  ready=$(kubectl_ -n "$MON_NAMESPACE" get deployment prometheus-operator \
    -o jsonpath='{.status.readyReplicas}' 2>/dev/null) || ready=
  if [ "${ready:-0}" -ge 1 ]; then
    printf '%-24s %s\n' prometheus-operator "ready ($PROMETHEUS_OPERATOR_VERSION)"
  else
    printf '%-24s %s\n' prometheus-operator "not ready"
    rc=1
  fi
  if _mon_prometheus_answers; then
    printf '%-24s %s\n' prometheus "ready ($PROMETHEUS_VERSION, $(monitoring_prometheus_url))"
  else
    printf '%-24s %s\n' prometheus "not ready"
    rc=1
  fi
  if kubectl_ wait --for=condition=Available --timeout=1s apiservice/v1beta1.metrics.k8s.io \
    >/dev/null 2>&1; then
    printf '%-24s %s\n' metrics-server "ready ($METRICS_SERVER_VERSION, metrics.k8s.io Available)"
  else
    printf '%-24s %s\n' metrics-server "not ready"
    rc=1
  fi
  return "$rc"
}
