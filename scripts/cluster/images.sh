# shellcheck shell=bash
# Images without a registry: a Debian base from debootstrap, a Python base and a Redis on it, the
# project image from the project's own Dockerfile, pause and CoreDNS from static binaries; each
# loaded into containerd's k8s.io namespace. Sourced by scripts/cluster.sh.

# -slim: trimmed like Docker's official Debian slim images (no .debs, apt lists, docs, man pages
# or translations), so that the project image measured here carries what python:3.11-slim would.
LOCAL_DEBIAN_IMAGE=local/debian:$LOCAL_DEBIAN_SUITE-slim
LOCAL_PYTHON_IMAGE=local/python:3.11-$LOCAL_DEBIAN_SUITE-slim
# Redis for the chart's cache.redis (the prediction cache's shared tier): Debian's redis-server
# package (bookworm: Redis 7.0) on the Debian base, UID/GID 999 like the official image.
LOCAL_REDIS_IMAGE=local/redis:7.0-$LOCAL_DEBIAN_SUITE
# nginx for the chart's A/B router: Debian's nginx package (bookworm: 1.22) on the Debian base,
# UID/GID 101 like the official image.
LOCAL_NGINX_IMAGE=local/nginx:1.22-$LOCAL_DEBIAN_SUITE
# The canary of the e2e suite's A/B test: the project image built for another model.
CANARY_MODEL_NAME=${CANARY_MODEL_NAME:-resnet18}
PROJECT_IMAGE_REPOSITORY=local/resnet-serving
COREDNS_IMAGE=local/coredns:$COREDNS_VERSION
# The CA bundle the build trusts for pip and the weights download (a BuildKit secret: it is
# never written into a layer). Here egress to PyPI is TLS-intercepted, so the host's bundle.
BUILD_CA_BUNDLE=${BUILD_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
# Weights baked into the project image: `random` (no ImageNet weights can be had here), or a
# weights name with the file in weights/ (see the Dockerfile).
LOCAL_MODEL_WEIGHTS=${LOCAL_MODEL_WEIGHTS:-random}

# What Docker's official Debian slim images leave out (debuerreotype's --slim): the packages
# debootstrap downloaded (~120 MB), apt's lists, documentation, man pages and translations; and
# the dpkg and apt settings that keep later installs (the Python layer) from bringing them back.
slim_rootfs() {
  local rootfs=$1
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
    "$rootfs"/usr/share/locale/* "$rootfs"/usr/share/lintian
  printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
    'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' \
    'path-exclude /usr/share/locale/*' 'path-exclude /usr/share/lintian/*' \
    >"$rootfs/etc/dpkg/dpkg.cfg.d/slim"
  printf '%s\n' 'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };' \
    'APT::Keep-Downloaded-Packages "false";' >"$rootfs/etc/apt/apt.conf.d/docker-clean"
}

docker_has() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

apt_mirror() {
  # The Debian mirror apt uses on this machine (deb822 or one-line sources).
  local f files=()
  for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list; do
    if [ -f "$f" ]; then files+=("$f"); fi
  done
  awk '/^(URIs:|deb) / && !/security/ { print $2; exit }' "${files[@]}"
}

base_images() {
  if ! docker_has "$LOCAL_DEBIAN_IMAGE"; then
    local rootfs=$CLUSTER_BUILD/rootfs mirror
    mirror=$(apt_mirror)
    [ -n "$mirror" ] || die "no Debian mirror found in apt's sources"
    log "debootstrap $LOCAL_DEBIAN_SUITE (minbase) from $mirror"
    rm -rf "$rootfs"
    debootstrap --variant=minbase "$LOCAL_DEBIAN_SUITE" "$rootfs" "$mirror" >"$CLUSTER_LOGS/debootstrap.log" 2>&1 \
      || die "debootstrap failed (log: $CLUSTER_LOGS/debootstrap.log)"
    slim_rootfs "$rootfs"
    tar -C "$rootfs" -c . | "$DOCKER" import - "$LOCAL_DEBIAN_IMAGE" >/dev/null
    rm -rf "$rootfs"
  fi
  if ! docker_has "$LOCAL_PYTHON_IMAGE"; then
    log "building $LOCAL_PYTHON_IMAGE"
    DOCKER_BUILDKIT=1 "$DOCKER" build -q -t "$LOCAL_PYTHON_IMAGE" \
      -f "$ROOT/deploy/local-cluster/python-base.Dockerfile" "$ROOT/deploy/local-cluster" >/dev/null \
      || die "building $LOCAL_PYTHON_IMAGE failed"
  fi
}

# Builds the project image from the real Dockerfile and prints its tag: local-<image id>, so
# that a changed image changes the chart's image tag and `helm upgrade` rolls the pods. The
# target: cpu (the default: no torch, the model baked as OpenVINO IR) or gpu (torch/CUDA). Its
# sizes and the cost of each layer go to $CLUSTER_DIR/image-<target>.json (measure_image).
project_image() {
  local target=${1:-cpu} ref id
  ref=$PROJECT_IMAGE_REPOSITORY:build
  [ "$target" = cpu ] || ref+=-$target
  log "building the $target image from ./Dockerfile (PYTHON_IMAGE=$LOCAL_PYTHON_IMAGE, converter's torch from PyPI, weights $LOCAL_MODEL_WEIGHTS)"
  # TORCH_INDEX_URL empty: PyPI's torch for the converter stage (the CPU index is not reachable
  # from these machines); nothing of that stage ships but the IR.
  DOCKER_BUILDKIT=1 "$DOCKER" build --progress=plain --target "$target" -t "$ref" \
    --build-arg PYTHON_IMAGE="$LOCAL_PYTHON_IMAGE" --build-arg TORCH_INDEX_URL= \
    --build-arg MODEL_WEIGHTS="$LOCAL_MODEL_WEIGHTS" \
    --build-arg REVISION="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    --secret id=ca_bundle,src="$BUILD_CA_BUNDLE" "$ROOT" >"$CLUSTER_LOGS/image-build-$target.log" 2>&1 \
    || die "docker build failed (log: $CLUSTER_LOGS/image-build-$target.log)"
  measure_image "$ref" "$target" >&2
  id=$("$DOCKER" image inspect -f '{{.Id}}' "$ref")
  id=${id#sha256:}
  echo "local-${id:0:12}"
}

# measure_image REF TARGET: the uncompressed size (what `docker image inspect` reports, the
# figure the 1 GiB bound is about), the compressed size (`docker save | gzip`: about what a
# registry stores and a node pulls) and each layer's size with the instruction that made it.
measure_image() {
  local ref=$1 target=$2 bytes compressed out=$CLUSTER_DIR/image-$2.json
  bytes=$("$DOCKER" image inspect -f '{{.Size}}' "$ref")
  compressed=$("$DOCKER" save "$ref" | gzip -c | wc -c)
  "$DOCKER" history --no-trunc --format '{{json .}}' "$ref" \
    | jq -s --arg ref "$ref" --arg target "$target" --argjson bytes "$bytes" \
      --argjson compressed "$compressed" \
      '{image: $ref, target: $target, bytes: $bytes, compressed_bytes: $compressed,
        layers: [.[] | {size: .Size, created_by: (.CreatedBy | .[0:160])}]}' >"$out"
  log "$target image: $(numfmt --to=iec "$bytes") uncompressed ($bytes bytes), $(numfmt --to=iec "$compressed") compressed; layers: $out"
}

# load_project_image TAG: into containerd, once; earlier builds go (each is several GB, and the
# disk is what the kubelet evicts pods for).
load_project_image() {
  local tag=$1 ref old
  ref=$PROJECT_IMAGE_REPOSITORY:$tag
  "$DOCKER" image inspect "$ref" >/dev/null 2>&1 || "$DOCKER" tag "$PROJECT_IMAGE_REPOSITORY:build" "$ref"
  if ! image_loaded "$ref"; then
    log "loading $ref into containerd ($("$DOCKER" image inspect -f '{{.Size}}' "$ref" | numfmt --to=iec))"
    load_image "$ref"
  fi
  [ -f "$CLUSTER_DIR/images" ] || return 0
  local current_id
  current_id=$("$DOCKER" image inspect -f '{{.Id}}' "$ref")
  grep -x "$PROJECT_IMAGE_REPOSITORY:local-.*" "$CLUSTER_DIR/images" | grep -vxF "$ref" | while read -r old; do
    # Its name, and the CRI's image-ID reference beside it (unless the ID is the current one).
    local old_id
    old_id=$("$DOCKER" image inspect -f '{{.Id}}' "$old" 2>/dev/null || true)
    "${CTR[@]}" images rm --sync "docker.io/$old" >/dev/null 2>&1 || true
    if [ -n "$old_id" ] && [ "$old_id" != "$current_id" ]; then
      "${CTR[@]}" images rm --sync "$old_id" >/dev/null 2>&1 || true
    fi
    "$DOCKER" image rm "$old" >/dev/null 2>&1 || true
    grep -vxF -e "$old" -e "$old_id" "$CLUSTER_DIR/images" >"$CLUSTER_DIR/images.new" || true
    mv "$CLUSTER_DIR/images.new" "$CLUSTER_DIR/images"
  done || true
}

system_images() {
  binary_image "$PAUSE_IMAGE" pause
  binary_image "$COREDNS_IMAGE" coredns
}

# redis_image: $LOCAL_REDIS_IMAGE from deploy/local-cluster/redis.Dockerfile (on the Debian base,
# built once like the base images), loaded into containerd unless it is there already. The
# release runs it with cache.redis.image.repository=local/redis, tag 7.0-bookworm, digest "".
redis_image() {
  if ! docker_has "$LOCAL_REDIS_IMAGE"; then
    log "building $LOCAL_REDIS_IMAGE (Debian's redis-server)"
    DOCKER_BUILDKIT=1 "$DOCKER" build -q -t "$LOCAL_REDIS_IMAGE" \
      -f "$ROOT/deploy/local-cluster/redis.Dockerfile" "$ROOT/deploy/local-cluster" >/dev/null \
      || die "building $LOCAL_REDIS_IMAGE failed"
  fi
  if image_loaded "$LOCAL_REDIS_IMAGE"; then
    log "image $LOCAL_REDIS_IMAGE already in containerd"
  else
    log "loading $LOCAL_REDIS_IMAGE into containerd"
    load_image "$LOCAL_REDIS_IMAGE"
  fi
}

# nginx_image: $LOCAL_NGINX_IMAGE from deploy/local-cluster/nginx.Dockerfile (built once, like
# the Redis image), loaded into containerd unless it is there already. values-local.yaml runs the
# router with it.
nginx_image() {
  if ! docker_has "$LOCAL_NGINX_IMAGE"; then
    log "building $LOCAL_NGINX_IMAGE (Debian's nginx)"
    DOCKER_BUILDKIT=1 "$DOCKER" build -q -t "$LOCAL_NGINX_IMAGE" \
      -f "$ROOT/deploy/local-cluster/nginx.Dockerfile" "$ROOT/deploy/local-cluster" >/dev/null \
      || die "building $LOCAL_NGINX_IMAGE failed"
  fi
  if image_loaded "$LOCAL_NGINX_IMAGE"; then
    log "image $LOCAL_NGINX_IMAGE already in containerd"
  else
    log "loading $LOCAL_NGINX_IMAGE into containerd"
    load_image "$LOCAL_NGINX_IMAGE"
  fi
}

# canary_image: the cpu image built for $CANARY_MODEL_NAME (the Dockerfile's MODEL_NAME), the
# "another model" of the e2e suite's A/B test; the same build cache as the project image, so
# only the convert stage and the model's layer are new. Loaded into containerd as
# local/resnet-serving:canary-<model>-<image id>; the tag goes to $CLUSTER_DIR/canary-image-tag.
canary_image() {
  local ref=$PROJECT_IMAGE_REPOSITORY:build-canary id tag
  log "building the canary image (cpu, MODEL_NAME=$CANARY_MODEL_NAME)"
  DOCKER_BUILDKIT=1 "$DOCKER" build --progress=plain --target cpu -t "$ref" \
    --build-arg PYTHON_IMAGE="$LOCAL_PYTHON_IMAGE" --build-arg TORCH_INDEX_URL= \
    --build-arg MODEL_NAME="$CANARY_MODEL_NAME" --build-arg MODEL_WEIGHTS="$LOCAL_MODEL_WEIGHTS" \
    --build-arg REVISION="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    --secret id=ca_bundle,src="$BUILD_CA_BUNDLE" "$ROOT" >"$CLUSTER_LOGS/image-build-canary.log" 2>&1 \
    || die "docker build of the canary image failed (log: $CLUSTER_LOGS/image-build-canary.log)"
  id=$("$DOCKER" image inspect -f '{{.Id}}' "$ref")
  id=${id#sha256:}
  tag=canary-$CANARY_MODEL_NAME-${id:0:12}
  "$DOCKER" tag "$ref" "$PROJECT_IMAGE_REPOSITORY:$tag"
  if ! image_loaded "$PROJECT_IMAGE_REPOSITORY:$tag"; then
    log "loading $PROJECT_IMAGE_REPOSITORY:$tag into containerd"
    load_image "$PROJECT_IMAGE_REPOSITORY:$tag"
  fi
  echo "$tag" >"$CLUSTER_DIR/canary-image-tag"
}

# What BuildKit may keep of its cache after `down`: the latest build's layers (torch and the
# venv, ~5 GB with PyPI's CUDA wheels), so that the next `up` rebuilds in seconds, but not every
# generation of them.
BUILD_CACHE_KEEP=${BUILD_CACHE_KEEP:-12GB}

# `down` without --keep-images: every image `up` loaded into containerd (--sync: their content
# is collected before containerd stops), the project image builds in docker, and the build
# cache beyond BUILD_CACHE_KEEP. The base images stay: they are the cache.
remove_images() {
  local ref
  [ -f "$CLUSTER_DIR/images" ] || return 0
  while read -r ref; do
    "${CTR[@]}" images rm --sync "$ref" "docker.io/$ref" >/dev/null 2>&1 || true
    case $ref in
      "$PROJECT_IMAGE_REPOSITORY":*) "$DOCKER" image rm -f "$ref" >/dev/null 2>&1 || true ;;
    esac
  done <"$CLUSTER_DIR/images"
  "$DOCKER" image rm -f "$PROJECT_IMAGE_REPOSITORY:build" "$PROJECT_IMAGE_REPOSITORY:build-canary" >/dev/null 2>&1 || true
  rm -f "$CLUSTER_DIR/canary-image-tag"
  "$DOCKER" image prune -f >/dev/null 2>&1 || true
  "$DOCKER" builder prune -f --keep-storage "$BUILD_CACHE_KEEP" >/dev/null 2>&1 || true
  rm -f "$CLUSTER_DIR/images"
  log "removed the images loaded into containerd and the project image builds (build cache kept: $BUILD_CACHE_KEEP)"
}
