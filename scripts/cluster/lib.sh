# shellcheck shell=bash disable=SC2034  # the paths are used by the other parts
# Shared helpers of scripts/cluster.sh and its parts (sourced, never run).
# Paths: everything the cluster writes lives under .tools/cluster/ of the checkout:
#   bin/       binaries built from pinned Go modules, each with a .<name>.version stamp
#   run/       the running cluster's state (etcd data, PKI, kubelet root): removed by `down`
#   logs/      one log per daemon, plus <name>.pid for every process `up` started
#   images     the image references `up` loaded into containerd (removed by `down`)
#   kubeconfig the admin kubeconfig (server https://127.0.0.1:6443)

# Resolved (symlinks followed, e.g. .tools linked to a larger disk): the kernel reports paths
# resolved (/proc/mounts lists the kubelet's volumes so), and `down` compares them with these.
CLUSTER_DIR=$(realpath -m "${CLUSTER_DIR:-$ROOT/.tools/cluster}")
CLUSTER_BIN=$CLUSTER_DIR/bin
CLUSTER_RUN=$CLUSTER_DIR/run
CLUSTER_LOGS=$CLUSTER_DIR/logs
CLUSTER_BUILD=$CLUSTER_DIR/build
KUBECONFIG_FILE=$CLUSTER_DIR/kubeconfig
KUBECTL=$CLUSTER_BIN/kubectl
HELM=$ROOT/.tools/bin/helm
# containerd's namespace that the kubelet's CRI uses.
CTR=(ctr -n k8s.io)
# Debian's docker.io client (20.10): it drives the daemon's BuildKit itself. A newer client
# elsewhere on PATH (28.x here) wants the buildx plugin for BuildKit builds, which Debian lacks.
DOCKER=${DOCKER:-/usr/bin/docker}

log() { printf '\033[1m==> [cluster] %s\033[0m\n' "$*" >&2; }
die() { printf 'cluster: %s\n' "$*" >&2; exit 1; }

kubectl_() { "$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" "$@"; }

# wait_for SECONDS WHAT CMD...: retry CMD every second until it succeeds; past SECONDS, fail
# with a message that names WHAT (a hung step must never hang the script).
wait_for() {
  local seconds=$1 what=$2 start=$SECONDS
  shift 2
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS - start >= seconds )); then
      die "timed out after ${seconds}s waiting for $what (logs: $CLUSTER_LOGS)"
    fi
    sleep 1
  done
}

# stamped NAME VERSION: true when .tools/cluster/bin/NAME exists and was built at VERSION.
stamped() { [ -x "$CLUSTER_BIN/$1" ] && [ "$(cat "$CLUSTER_BIN/.$1.version" 2>/dev/null)" = "$2" ]; }
stamp() { echo "$2" > "$CLUSTER_BIN/.$1.version"; }

# module_dir MODULE@VERSION: download (checksum-verified by the Go toolchain) and print its dir.
module_dir() {
  local dir
  dir=$(GOFLAGS=-mod=mod go mod download -json "$1" | jq -r .Dir)
  [ -d "$dir" ] || die "go mod download $1 failed"
  echo "$dir"
}

# module_copy MODULE@VERSION DEST: a writable copy of a module's source (to edit go.mod or
# trim plugins before building); the module cache itself is read-only.
module_copy() {
  local src
  src=$(module_dir "$1")
  rm -rf "$2" && mkdir -p "$(dirname "$2")"
  cp -R "$src" "$2" && chmod -R u+w "$2"
}

# start_daemon NAME CMD...: start CMD in the background, its output in logs/NAME.log, its PID
# in logs/NAME.pid (what `down` stops, and nothing else).
start_daemon() {
  local name=$1
  shift
  mkdir -p "$CLUSTER_LOGS"
  nohup "$@" >"$CLUSTER_LOGS/$name.log" 2>&1 &
  echo $! >"$CLUSTER_LOGS/$name.pid"
}

# running NAME: the daemon `up` started under NAME is alive.
running() {
  local pid
  pid=$(cat "$CLUSTER_LOGS/$1.pid" 2>/dev/null) || return 1
  kill -0 "$pid" 2>/dev/null
}

# stop_daemon NAME [SECONDS]: SIGTERM by PID, wait, then SIGKILL; removes the pid file.
stop_daemon() {
  local name=$1 seconds=${2:-30} pid i
  pid=$(cat "$CLUSTER_LOGS/$name.pid" 2>/dev/null) || return 0
  if kill "$pid" 2>/dev/null; then
    for ((i = 0; i < seconds * 2; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then
      kill -9 "$pid" 2>/dev/null || true
      sleep 0.5
    fi
    log "stopped $name (pid $pid)"
  fi
  rm -f "$CLUSTER_LOGS/$name.pid"
}

# load_image REF: copy a docker image into containerd's k8s.io namespace (where the kubelet
# looks) and remember it, so that `down` removes it: its name, and the image-ID reference
# (sha256:<config digest>, the same ID as docker's) that the CRI adds beside it.
load_image() {
  local ref=$1 id
  "$DOCKER" save "$ref" | "${CTR[@]}" images import - >/dev/null \
    || die "could not import $ref into containerd"
  id=$("$DOCKER" image inspect -f '{{.Id}}' "$ref")
  for ref in "$ref" "$id"; do
    grep -qxF "$ref" "$CLUSTER_DIR/images" 2>/dev/null || echo "$ref" >>"$CLUSTER_DIR/images"
  done
}

# image_loaded REF: containerd (k8s.io) already holds REF (short names as the kubelet reads
# them: local/x:1 is docker.io/local/x:1).
image_loaded() {
  local ref=$1
  case ${ref%%/*} in
    *.* | *:* | localhost) ;;
    *) ref=docker.io/$ref ;;
  esac
  "${CTR[@]}" images ls -q 2>/dev/null | grep -qxF "$ref"
}

# scratch_image REF DIR ENTRYPOINT_JSON: an image holding only DIR's files (static binaries),
# made with `docker import` (no base image, no registry).
scratch_image() {
  tar -C "$2" -c . | "$DOCKER" import --change "ENTRYPOINT $3" - "$1" >/dev/null \
    || die "docker import $1 failed"
}

# binary_image REF BINARY: a scratch image with .tools/cluster/bin/BINARY as /bin/BINARY (where
# upstream images keep theirs: the operator runs /bin/prometheus-config-reloader by that path),
# loaded into containerd unless it is there already. The tag is the pinned version: a binary
# rebuilt at the same version is only picked up after `down` (which removes the images).
binary_image() {
  local ref=$1 bin=$2 dir=$CLUSTER_BUILD/image-$2
  if image_loaded "$ref"; then
    log "image $ref already in containerd"
    return 0
  fi
  [ -x "$CLUSTER_BIN/$bin" ] || die "$CLUSTER_BIN/$bin is missing (not built)"
  log "image $ref: scratch + /bin/$bin, into containerd"
  rm -rf "$dir" && mkdir -p "$dir/bin"
  cp "$CLUSTER_BIN/$bin" "$dir/bin/$bin"
  scratch_image "$ref" "$dir" "[\"/bin/$bin\"]"
  rm -rf "$dir"
  load_image "$ref"
}
