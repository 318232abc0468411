# shellcheck shell=bash
# Tracing on the local cluster: Jaeger v2 (github.com/jaegertracing/jaeger, cmd/jaeger: the
# OpenTelemetry collector with Jaeger's storage and query extensions) built from its pinned Go
# module into a scratch image, and deployed in namespace `observability` with an OTLP receiver
# and in-memory storage; the release's pods export to it (values-dev.yaml, `tracing`).
# Sourced by scripts/cluster.sh after versions.sh and lib.sh; `up` calls, in this order:
#   tracing_build   the static binary into .tools/cluster/bin (stamped: a second run is a no-op)
#   tracing_images  the scratch image local/jaeger:<version>, loaded into containerd (k8s.io)
#   tracing_deploy  deploy/local-cluster/jaeger.yaml (namespace, config, Deployment, Services);
#                   waits until the query API answers on its Service
# and `status` calls tracing_status (one line). `down` removes the image with the others.

TRACING_MANIFEST=$ROOT/deploy/local-cluster/jaeger.yaml
TRACING_NAMESPACE=observability
JAEGER_MODULE=github.com/jaegertracing/jaeger
JAEGER_IMAGE=local/jaeger:$JAEGER_VERSION

# The documented way to build it: a throwaway module that requires cmd/jaeger as a tool (a plain
# `go install ...@version` refuses a module whose go.mod has replace directives). Jaeger's own
# replaces are copied into it, so the dependency versions are the ones upstream builds with.
# Static (CGO_ENABLED=0, as Jaeger's Makefile builds it): the image has nothing else.
tracing_build() {
  if stamped jaeger "$JAEGER_VERSION"; then
    log "jaeger $JAEGER_VERSION already built"
    return 0
  fi
  local src=$CLUSTER_BUILD/jaeger tmp=$CLUSTER_BIN/.jaeger.tmp start=$SECONDS upstream edits=() r
  log "building jaeger $JAEGER_VERSION (module $JAEGER_MODULE, cmd/jaeger; about 4 min cold on 2 CPUs)"
  mkdir -p "$CLUSTER_BIN"
  upstream=$(module_dir "$JAEGER_MODULE@$JAEGER_VERSION")
  while read -r r; do
    [ -n "$r" ] && edits+=("-replace=$r")
  done < <(cd "$upstream" && go mod edit -json | jq -r '.Replace[]? | select(.New.Version != null)
    | "\(.Old.Path)\(if .Old.Version then "@" + .Old.Version else "" end)=\(.New.Path)@\(.New.Version)"')
  rm -rf "$src" && mkdir -p "$src"
  (
    cd "$src"
    export GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0
    go mod init local/jaegerbuild 2>/dev/null
    if [ "${#edits[@]}" -gt 0 ]; then go mod edit "${edits[@]}"; fi
    go get -tool "$JAEGER_MODULE/cmd/jaeger@$JAEGER_VERSION"
    go build -trimpath \
      -ldflags "-s -w -X $JAEGER_MODULE/internal/version.latestVersion=$JAEGER_VERSION" \
      -o "$tmp" "$JAEGER_MODULE/cmd/jaeger"
  ) || die "building jaeger $JAEGER_VERSION failed"
  mv -f "$tmp" "$CLUSTER_BIN/jaeger"
  stamp jaeger "$JAEGER_VERSION"
  rm -rf "$src"
  log "built jaeger $JAEGER_VERSION in $((SECONDS - start))s"
}

tracing_images() {
  binary_image "$JAEGER_IMAGE" jaeger
}

# tracing_query_url: the Jaeger query API's address for the host (its Service's ClusterIP).
tracing_query_url() {
  local ip
  ip=$(kubectl_ -n "$TRACING_NAMESPACE" get service jaeger-query -o jsonpath='{.spec.clusterIP}' 2>/dev/null) \
    && [ -n "$ip" ] && echo "http://$ip:16686"
}
_tracing_query_answers() {
  local url
  url=$(tracing_query_url) && curl -fs --max-time 3 "$url/api/services" >/dev/null
}
_tracing_diag() {
  kubectl_ -n "$TRACING_NAMESPACE" get deploy,pods,endpointslices -o wide 2>&1
  kubectl_ -n "$TRACING_NAMESPACE" get events --sort-by=.lastTimestamp 2>&1 | tail -n 15
  kubectl_ -n "$TRACING_NAMESPACE" logs deployment/jaeger --tail=20 2>&1
}
# _tracing_wait SECONDS WHAT CMD...: wait_for, printing the namespace's state on a timeout.
_tracing_wait() {
  local seconds=$1 what=$2
  shift 2
  if ! (wait_for "$seconds" "$what" "$@"); then
    _tracing_diag >&2 || true
    die "tracing: $what did not happen within ${seconds}s"
  fi
}

tracing_deploy() {
  local start=$SECONDS digest
  # The manifest's hash goes on the pod template: a changed config (the binary reads its
  # ConfigMap once, at start) rolls the pod.
  digest=$(sha256sum "$TRACING_MANIFEST" | cut -c1-16)
  log "tracing: Jaeger $JAEGER_VERSION in namespace $TRACING_NAMESPACE (OTLP 4317/4318, query 16686)"
  sed -e "s|@JAEGER_IMAGE@|$JAEGER_IMAGE|g" -e "s|@CONFIG_DIGEST@|$digest|g" "$TRACING_MANIFEST" \
    | kubectl_ apply --server-side --force-conflicts --field-manager=local-cluster -f - >/dev/null \
    || die "kubectl apply $TRACING_MANIFEST failed"
  _tracing_wait 120 "the jaeger Deployment to be Ready" \
    kubectl_ -n "$TRACING_NAMESPACE" rollout status deployment/jaeger --timeout=5s
  _tracing_wait 60 "Jaeger's query API to answer on Service jaeger-query" _tracing_query_answers
  log "tracing: Jaeger ready in $((SECONDS - start))s; query API $(tracing_query_url), OTLP http://jaeger-collector.$TRACING_NAMESPACE:4318 (HTTP) and :4317 (gRPC)"
}

# tracing_status: one line, as cluster.sh's status; fails when Jaeger does not answer.
tracing_status() {
  if _tracing_query_answers; then
    printf '%-24s %s\n' jaeger "ready ($JAEGER_VERSION, query $(tracing_query_url))"
  else
    printf '%-24s %s\n' jaeger "not ready"
    return 1
  fi
}
