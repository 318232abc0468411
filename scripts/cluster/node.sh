# shellcheck shell=bash
# The control plane and the node: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet and kube-proxy as host processes, each started by PID into
# .tools/cluster/logs, and stopped in the reverse order. Sourced by scripts/cluster.sh.

SERVICE_CIDR=10.96.0.0/16
CLUSTER_DNS_IP=10.96.0.10
ETCD_CLIENT_URL=http://127.0.0.1:2379
# Reverse start order: the apiserver hangs on shutdown until a second signal if etcd goes first.
NODE_DAEMONS=(etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)

host_ip() {
  local dev
  dev=$(ip -4 route show default | awk '{print $5; exit}')
  ip -4 -o addr show "$dev" | awk '{split($4, a, "/"); print a[1]; exit}'
}

write_credentials() {
  local ip=$1 pki=$CLUSTER_RUN/pki
  mkdir -p "$pki"
  if [ ! -f "$pki/sa.key" ]; then
    openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
    openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  fi
  # A cluster CA, and the apiserver's serving certificate for every name clients use: loopback
  # (the kubeconfig), this machine's address (the kubelet, kube-proxy), the kubernetes Service
  # IP and names (pods). Pods verify it through the CA the controller-manager hands them.
  if [ ! -f "$pki/ca.crt" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$pki/ca.key" -out "$pki/ca.crt" -days 365 \
      -subj "/CN=resnet-serving-local-ca" 2>/dev/null
  fi
  local sans="IP:127.0.0.1,IP:$ip,IP:${SERVICE_CIDR%.0/*}.1,DNS:localhost,DNS:kubernetes"
  sans+=",DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  openssl req -newkey rsa:2048 -nodes -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr" \
    -subj "/CN=kube-apiserver" 2>/dev/null
  openssl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -out "$pki/apiserver.crt" -days 365 -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$sans") \
    2>/dev/null || die "could not sign the apiserver certificate"
  # The aggregation layer (metrics-server's APIService): the apiserver proxies to it with a
  # client certificate from its own CA, which the aggregated server checks.
  if [ ! -f "$pki/front-proxy-client.crt" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$pki/front-proxy-ca.key" -out "$pki/front-proxy-ca.crt" \
      -days 365 -subj "/CN=resnet-serving-local-front-proxy-ca" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout "$pki/front-proxy-client.key" -out "$pki/front-proxy-client.csr" \
      -subj "/CN=front-proxy-client" 2>/dev/null
    openssl x509 -req -in "$pki/front-proxy-client.csr" -CA "$pki/front-proxy-ca.crt" -CAkey "$pki/front-proxy-ca.key" \
      -CAcreateserial -out "$pki/front-proxy-client.crt" -days 365 \
      -extfile <(printf 'extendedKeyUsage=clientAuth\n') 2>/dev/null || die "could not sign the front-proxy certificate"
  fi
  # One admin token per cluster, random, readable by root only.
  if [ ! -f "$pki/tokens.csv" ]; then
    (umask 077 && echo "$(openssl rand -hex 24),admin,admin,system:masters" >"$pki/tokens.csv")
  fi
}

write_kubeconfig() {
  local token ca
  token=$(cut -d, -f1 "$CLUSTER_RUN/pki/tokens.csv")
  ca=$(base64 -w0 <"$CLUSTER_RUN/pki/ca.crt")
  (umask 077 && cat >"$KUBECONFIG_FILE" <<YAML
apiVersion: v1
kind: Config
clusters:
- name: resnet-serving-local
  cluster: {server: "https://127.0.0.1:6443", certificate-authority-data: "$ca"}
users:
- name: admin
  user: {token: "$token"}
contexts:
- name: resnet-serving-local
  context: {cluster: resnet-serving-local, user: admin}
current-context: resnet-serving-local
YAML
  )
}

write_kubelet_config() {
  # failCgroupV1: Kubernetes 1.37 refuses cgroup v1 unless told, and this VM has only v1.
  # Anonymous, AlwaysAllow: metrics-server and Prometheus read the kubelet without a client
  # certificate; the kubelet port is reachable only from this machine and its pods.
  # Eviction thresholds in absolute terms and low: the project image is several GB and this
  # shared disk is large but mostly used by others (a percentage of it evicted every pod).
  # No image garbage collection: nothing can be pulled again here, so a collected image
  # would leave its pods in ErrImageNeverPull; `down` removes the images instead.
  cat >"$CLUSTER_RUN/kubelet-config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$CONTAINERD_SOCKET
clusterDomain: cluster.local
clusterDNS: [$CLUSTER_DNS_IP]
resolvConf: /etc/resolv.conf
evictionHard: {memory.available: "100Mi", nodefs.available: "1Gi", imagefs.available: "1Gi", nodefs.inodesFree: "1%"}
evictionPressureTransitionPeriod: 30s
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
YAML
}

node_up() {
  local ip kc=$KUBECONFIG_FILE pki=$CLUSTER_RUN/pki
  ip=$(host_ip)
  [ -n "$ip" ] || die "cannot tell this machine's address (no default route?)"
  mkdir -p "$CLUSTER_RUN/etcd" "$CLUSTER_RUN/kubelet"
  write_credentials "$ip"
  if ! running etcd; then
    log "starting etcd"
    start_daemon etcd etcd --data-dir "$CLUSTER_RUN/etcd" \
      --listen-client-urls "$ETCD_CLIENT_URL" --advertise-client-urls "$ETCD_CLIENT_URL" \
      --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
      --initial-cluster default=http://127.0.0.1:2380
  fi
  if ! running kube-apiserver; then
    log "starting kube-apiserver"
    # Bound on every address and advertising this machine's: pods reach it through the
    # kubernetes Service, which points at the advertised address.
    start_daemon kube-apiserver "$CLUSTER_BIN/kube-apiserver" --etcd-servers="$ETCD_CLIENT_URL" \
      --bind-address=0.0.0.0 --advertise-address="$ip" --secure-port=6443 \
      --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
      --client-ca-file="$pki/ca.crt" --token-auth-file="$pki/tokens.csv" --authorization-mode=Node,RBAC \
      --service-account-issuer=https://kubernetes.default.svc.cluster.local \
      --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
      --service-cluster-ip-range="$SERVICE_CIDR" --allow-privileged=true \
      --requestheader-client-ca-file="$pki/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
      --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
      --requestheader-extra-headers-prefix=X-Remote-Extra- --enable-aggregator-routing=true \
      --proxy-client-cert-file="$pki/front-proxy-client.crt" --proxy-client-key-file="$pki/front-proxy-client.key"
  fi
  write_kubeconfig
  wait_for 120 "kube-apiserver /readyz" kubectl_ get --raw /readyz
  if ! running kube-controller-manager; then
    log "starting kube-controller-manager and kube-scheduler"
    # --root-ca-file: the CA that pods get in their service-account token volume, so in-cluster
    # clients can verify the apiserver.
    start_daemon kube-controller-manager "$CLUSTER_BIN/kube-controller-manager" --kubeconfig="$kc" \
      --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
      --leader-elect=false --bind-address=127.0.0.1
  fi
  if ! running kube-scheduler; then
    start_daemon kube-scheduler "$CLUSTER_BIN/kube-scheduler" --kubeconfig="$kc" --leader-elect=false \
      --bind-address=127.0.0.1
  fi
  if ! running kubelet; then
    log "starting kubelet"
    write_kubelet_config
    start_daemon kubelet "$CLUSTER_BIN/kubelet" --config="$CLUSTER_RUN/kubelet-config.yaml" \
      --kubeconfig="$kc" --root-dir="$CLUSTER_RUN/kubelet" --node-ip="$ip" --hostname-override="$NODE_NAME"
  fi
  wait_for 120 "node $NODE_NAME Ready" node_ready
  # dockerd sets the FORWARD policy to DROP: without these, pod-to-Service traffic that kube-proxy
  # DNATs to another pod on the bridge is dropped. Tracked so that `down` removes exactly them.
  add_iptables_rule FORWARD -i "$CNI_BRIDGE" -j ACCEPT
  add_iptables_rule FORWARD -o "$CNI_BRIDGE" -j ACCEPT
  if ! running kube-proxy; then
    log "starting kube-proxy"
    start_daemon kube-proxy "$CLUSTER_BIN/kube-proxy" --kubeconfig="$kc" --hostname-override="$NODE_NAME" \
      --cluster-cidr="$POD_SUBNET" --conntrack-max-per-core=0
  fi
}

node_ready() {
  [ "$(kubectl_ get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}

add_iptables_rule() {
  iptables -C "$@" 2>/dev/null && return 0
  iptables -I "$@"
  echo "$*" >>"$CLUSTER_DIR/iptables-rules"
}

remove_iptables_rules() {
  local rule
  [ -f "$CLUSTER_DIR/iptables-rules" ] || return 0
  while read -r rule; do
    # shellcheck disable=SC2086  # the saved rule splits into iptables' arguments on purpose
    iptables -D $rule 2>/dev/null || true
  done <"$CLUSTER_DIR/iptables-rules"
  rm -f "$CLUSTER_DIR/iptables-rules"
}

# Every container the kubelet started runs under a containerd shim that outlives the kubelet:
# kill them all (k8s.io namespace only), then free what their sandboxes held.
stop_pods() {
  local id
  for id in $("${CTR[@]}" tasks ls -q 2>/dev/null); do
    "${CTR[@]}" tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
  done
  for id in $("${CTR[@]}" tasks ls -q 2>/dev/null); do
    "${CTR[@]}" tasks delete -f "$id" >/dev/null 2>&1 || true
  done
  for id in $("${CTR[@]}" containers ls -q 2>/dev/null); do
    "${CTR[@]}" containers delete "$id" >/dev/null 2>&1 || true
  done
}

node_down() {
  local i
  for ((i = ${#NODE_DAEMONS[@]} - 1; i >= 0; i--)); do
    if [ "${NODE_DAEMONS[i]}" = kubelet ] && running kubelet; then
      stop_daemon kubelet 30
      ctr version >/dev/null 2>&1 && stop_pods
      continue
    fi
    stop_daemon "${NODE_DAEMONS[i]}" 30
  done
  if [ -x "$CLUSTER_BIN/kube-proxy" ]; then "$CLUSTER_BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true; fi
  remove_iptables_rules
  remove_run_dir
  if ip link show "$CNI_BRIDGE" >/dev/null 2>&1; then ip link delete "$CNI_BRIDGE" 2>/dev/null || true; fi
  rm -rf /var/lib/cni/networks/resnet-serving
}

# remove_run_dir: unmount the volumes the kubelet mounted under run/ (emptyDir, projected
# tokens), innermost first, then remove run/. /proc/mounts lists them under the resolved path:
# CLUSTER_RUN is one (lib.sh resolves CLUSTER_DIR).
remove_run_dir() {
  awk -v run="$CLUSTER_RUN/" 'index($2, run) == 1 { print $2 }' /proc/mounts | sort -r | while read -r mount; do
    umount -l "$mount" 2>/dev/null || true
  done
  rm -rf "$CLUSTER_RUN"
}
