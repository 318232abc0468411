# shellcheck shell=bash
# Kubernetes, CoreDNS and the pause binary, built from pinned Go modules (no registry, no
# release downloads). Sourced by scripts/cluster.sh; versions in versions.sh.

KUBERNETES_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)

# k8s.io/kubernetes replaces its k8s.io/* dependencies with ./staging directories that are not
# part of the published module: drop those replaces and require the published modules of the
# same release instead (identical code, tagged v0.<minor>.<patch>).
build_kubernetes() {
  local missing=() bin src=$CLUSTER_BUILD/kubernetes
  for bin in "${KUBERNETES_BINARIES[@]}"; do
    stamped "$bin" "$KUBERNETES_VERSION" || missing+=("$bin")
  done
  [ "${#missing[@]}" -gt 0 ] || return 0
  log "building Kubernetes $KUBERNETES_VERSION: ${missing[*]} (about 6 min cold on 2 CPUs)"
  module_copy "k8s.io/kubernetes@$KUBERNETES_VERSION" "$src"
  (
    cd "$src"
    rm -rf go.work go.work.sum vendor
    local edits=() path
    for path in $(go mod edit -json | jq -r '.Replace[]? | select(.New.Path | startswith("./staging")) | .Old.Path'); do
      edits+=("-dropreplace=$path")
    done
    for path in $(go mod edit -json | jq -r '.Require[] | select(.Version == "v0.0.0") | .Path'); do
      edits+=("-require=$path@$KUBERNETES_STAGING_VERSION")
    done
    go mod edit "${edits[@]}"
    local minor=${KUBERNETES_VERSION#v1.}
    minor=${minor%%.*}
    local ldflags="-s -w"
    ldflags+=" -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION"
    ldflags+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
    ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
    ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$KUBERNETES_VERSION"
    ldflags+=" -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
    local pkgs=()
    for bin in "${missing[@]}"; do pkgs+=("./cmd/$bin"); done
    GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$CLUSTER_BIN/" "${pkgs[@]}"
  ) || die "building Kubernetes failed"
  for bin in "${missing[@]}"; do stamp "$bin" "$KUBERNETES_VERSION"; done
  rm -rf "$src"
}

# The pause container: Kubernetes' own build/pause/linux/pause.c, static.
build_pause() {
  stamped pause "$KUBERNETES_VERSION" && return 0
  log "building pause from k8s.io/kubernetes@$KUBERNETES_VERSION"
  local src
  src=$(module_dir "k8s.io/kubernetes@$KUBERNETES_VERSION")
  gcc -Os -static -DVERSION="${PAUSE_IMAGE##*:}" -o "$CLUSTER_BIN/pause" "$src/build/pause/linux/pause.c" \
    || die "building pause failed (needs gcc and a static libc: libc6-dev)"
  strip "$CLUSTER_BIN/pause"
  stamp pause "$KUBERNETES_VERSION"
}

# CoreDNS with the plugins a one-node cluster uses: its full plugin list pulls in every cloud
# SDK (minutes more to build, for nothing here).
COREDNS_PLUGINS="errors log health ready kubernetes forward cache loop reload loadbalance hosts"
build_coredns() {
  stamped coredns "$COREDNS_VERSION" && return 0
  log "building CoreDNS $COREDNS_VERSION (trimmed plugin list)"
  local src=$CLUSTER_BUILD/coredns
  module_copy "github.com/coredns/coredns@$COREDNS_VERSION" "$src"
  (
    cd "$src"
    local keep='' plugin
    for plugin in $COREDNS_PLUGINS; do keep+="${keep:+|}$plugin"; done
    # core/plugin/zplugin.go imports one package per plugin: keep only ours.
    grep -Ev "_ \"github.com/coredns/coredns/plugin/" core/plugin/zplugin.go >zplugin.tmp
    grep -E "_ \"github.com/coredns/coredns/plugin/($keep)\"$" core/plugin/zplugin.go >zplugin.keep
    awk 'NR==FNR { keep = keep $0 "\n"; next } /^import \(/ { print; printf "%s", keep; next } { print }' \
      zplugin.keep zplugin.tmp >core/plugin/zplugin.go
    GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$CLUSTER_BIN/coredns" .
  ) || die "building CoreDNS failed"
  stamp coredns "$COREDNS_VERSION"
  rm -rf "$src"
}
