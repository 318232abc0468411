# shellcheck shell=bash
# The container engine: containerd (with its CRI plugin, which the kubelet talks to) and dockerd
# on top of it (which builds the images). Both run from configuration under .tools/cluster/etc;
# nothing is written to /etc. Sourced by scripts/cluster.sh.

CONTAINERD_SOCKET=/run/containerd/containerd.sock
CNI_CONF_DIR=$CLUSTER_DIR/etc/cni/net.d
POD_SUBNET=10.244.0.0/24
CNI_BRIDGE=cni0

ensure_packages() {
  local missing=() pkg
  for pkg in "${CLUSTER_APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
}

write_engine_config() {
  mkdir -p "$CLUSTER_DIR/etc" "$CNI_CONF_DIR"
  # restrict_oom_score_adj: this VM lacks CAP_SYS_RESOURCE, so runc cannot give the pause
  # container its negative oom_score_adj and every sandbox would fail ("can't get final
  # child's PID from pipe: EOF"). cgroupfs, not systemd: there is no systemd here.
  cat >"$CLUSTER_DIR/etc/containerd.toml" <<TOML
version = 2
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$CNI_CONF_DIR"
TOML
  # One bridge, host-local addresses: a one-node cluster needs no overlay network.
  cat >"$CNI_CONF_DIR/10-resnet-serving.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "resnet-serving", "plugins": [
  {"type": "bridge", "bridge": "$CNI_BRIDGE", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_SUBNET"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}},
  {"type": "loopback"}]}
JSON
}

engine_up() {
  write_engine_config
  if ctr version >/dev/null 2>&1; then
    # Already there (ours from an earlier `up`, or the machine's): the CRI plugin must be on.
    running containerd || log "using the containerd already running at $CONTAINERD_SOCKET"
  else
    log "starting containerd"
    start_daemon containerd containerd --config "$CLUSTER_DIR/etc/containerd.toml"
    wait_for 60 "containerd" ctr version
  fi
  if docker info >/dev/null 2>&1; then
    running dockerd || log "using the Docker engine already running"
  else
    log "starting dockerd"
    start_daemon dockerd dockerd --containerd="$CONTAINERD_SOCKET"
    wait_for 120 "dockerd" docker info
  fi
}

engine_down() {
  # dockerd first: it is a client of containerd.
  stop_daemon dockerd 60
  stop_daemon containerd 60
}
