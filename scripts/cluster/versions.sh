# shellcheck shell=bash
# Every pinned component of the local cluster, in one place (scripts/cluster.sh sources this).
# Binaries built from these land in .tools/cluster/bin, each stamped with its version: a change
# here rebuilds exactly what changed.

# Kubernetes itself: k8s.io/kubernetes from the Go module proxy, its ./staging replaces swapped
# for the published k8s.io/* modules of the same minor (v0.<minor>.<patch>).
KUBERNETES_VERSION=v1.37.2
KUBERNETES_STAGING_VERSION=v0.37.2
# Cluster DNS (github.com/coredns/coredns), trimmed to the plugins a one-node cluster needs.
COREDNS_VERSION=v1.15.0
# The pause image is built from k8s.io/kubernetes' own build/pause/linux/pause.c.
PAUSE_IMAGE=registry.k8s.io/pause:3.10
# Monitoring stand-in for kube-prometheus-stack 88.5.x: the prometheus-operator release that
# chart ships (its appVersion; the chart tests' CRD schemas use the same), the Prometheus it
# runs, and metrics-server for the HPA.
PROMETHEUS_OPERATOR_VERSION=v0.93.1
# github.com/prometheus/prometheus tags Prometheus 3.x as v0.3xx.y modules (3.13.1 = v0.313.1, the default of that operator release).
PROMETHEUS_MODULE_VERSION=v0.313.1
PROMETHEUS_VERSION=v3.13.1
METRICS_SERVER_VERSION=v0.8.0
# Tracing: Jaeger v2 (github.com/jaegertracing/jaeger's cmd/jaeger, built on the OpenTelemetry
# collector; the module keeps the v1 tags, the binary is Jaeger v2), OTLP in, memory
# storage, the query API on 16686.
JAEGER_VERSION=v1.75.0
# Base image of the project's Dockerfile when no registry is reachable: Debian bookworm
# (debootstrap from apt's own mirror) with Python 3.11 from Debian.
LOCAL_DEBIAN_SUITE=bookworm
# Debian packages the cluster needs (installed only when missing).
CLUSTER_APT_PACKAGES=(docker.io containerd runc debootstrap containernetworking-plugins
  etcd-server iptables conntrack socat jq openssl gettext-base)
