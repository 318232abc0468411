#!/usr/bin/env bash
# Installs everything needed to run and test resnet-serving, pinned, into this checkout:
#   .venv/        Python dependencies (pyproject.toml + constraints.txt)
#   .tools/bin/   helm, helm-unittest, kubeconform, actionlint (Go module proxy, pinned)
#   .tools/schemas/  Kubernetes and prometheus-operator CRD JSON schemas for kubeconform (offline)
#   system        promtool/prometheus, nginx, wrk (Debian/Ubuntu packages, via apt-get)
# Idempotent: a second run only checks. Environment knobs:
#   PYTHON           interpreter for the venv (default python3; needs 3.11+)
#   TORCH_INDEX_URL  extra index for torch wheels, e.g. https://download.pytorch.org/whl/cpu
#                    (CPU-only wheels, much smaller; PyPI's default wheels carry CUDA)
#   SKIP_APT=1       do not touch system packages (you installed them yourself)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

# --- pinned tool versions (one place) ----------------------------------------------------------
HELM_VERSION=v4.3.1
HELM_UNITTEST_VERSION=v1.1.2
KUBECONFORM_VERSION=v0.8.0
ACTIONLINT_VERSION=v1.7.12
# Chart tests: Kubernetes versions whose schemas the rendered manifests are checked against
# (the chart's kubeVersion floor and a current one), from the kubernetes-validate wheel; the
# prometheus-operator release whose CRDs kube-prometheus-stack 88.5.x ships (its appVersion).
K8S_SCHEMA_VERSIONS="1.27.0 1.34.0"
KUBERNETES_VALIDATE_VERSION=1.37.0
KUBERNETES_VALIDATE_SHA256=85136d018a27b50ec7fc049d902bfa5193f5976807e6c0f408e3ab6fe078cad9
PROMETHEUS_OPERATOR_VERSION=v0.93.1
APT_PACKAGES=(prometheus nginx wrk shellcheck)

log() { printf '\033[1m==> %s\033[0m\n' "$*"; }

# --- Python ------------------------------------------------------------------------------------
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  log "creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
pip_args=(--quiet --disable-pip-version-check -c constraints.txt)
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  pip_args+=(--extra-index-url "$TORCH_INDEX_URL")
fi
log "installing Python dependencies (pinned)"
.venv/bin/pip install "${pip_args[@]}" -e '.[dev]'

# --- system packages ---------------------------------------------------------------------------
missing=()
command -v promtool >/dev/null || missing+=(prometheus)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v wrk >/dev/null || missing+=(wrk)
# actionlint runs shellcheck on the workflows' run: scripts when it is installed (as on CI runners)
command -v shellcheck >/dev/null || missing+=(shellcheck)
if [ "${#missing[@]}" -gt 0 ] && [ "${SKIP_APT:-0}" != 1 ]; then
  log "installing system packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  # policy-rc.d-free installs on CI runners still try to start services; that is harmless.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
: "${APT_PACKAGES[@]}"  # documented above; installed only when missing

# --- Go tools ----------------------------------------------------------------------------------
mkdir -p .tools/bin
go_tool() {  # go_tool BINARY MODULE/cmd/path VERSION
  local bin=$1 pkg=$2 version=$3 stamp=".tools/bin/.$1.version"
  if [ -x ".tools/bin/$bin" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version" ]; then
    return
  fi
  command -v go >/dev/null || { echo "install.sh: Go is needed to build $bin" >&2; exit 1; }
  log "building $bin $version (go install)"
  GOBIN="$ROOT/.tools/bin" GOFLAGS=-mod=mod go install "$pkg@$version"
  echo "$version" > "$stamp"
}
go_tool helm helm.sh/helm/v4/cmd/helm "$HELM_VERSION"
# helm-unittest's go.mod has a replace directive, which `go install pkg@version` refuses: build
# it inside a copy of its module (downloaded, checksum-verified, from the Go module proxy).
go_build_module() {  # go_build_module BINARY MODULE CMD_DIR VERSION
  local bin=$1 module=$2 cmd=$3 version=$4 stamp=".tools/bin/.$1.version" src work
  if [ -x ".tools/bin/$bin" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version" ]; then
    return
  fi
  command -v go >/dev/null || { echo "install.sh: Go is needed to build $bin" >&2; exit 1; }
  log "building $bin $version (go build in its module)"
  src=$(go mod download -json "$module@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -d "$src" ] || { echo "install.sh: go mod download $module@$version failed" >&2; exit 1; }
  work=$(mktemp -d)
  cp -R "$src/." "$work" && chmod -R u+w "$work"
  (cd "$work" && go build -trimpath -o "$ROOT/.tools/bin/$bin" "./$cmd")
  rm -rf "$work"
  echo "$version" > "$stamp"
}
go_build_module helm-unittest github.com/helm-unittest/helm-unittest cmd/helm-unittest "$HELM_UNITTEST_VERSION"
go_tool kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION"
go_tool actionlint github.com/rhysd/actionlint/cmd/actionlint "$ACTIONLINT_VERSION"

# --- offline schemas for the chart tests (kubeconform never touches the network) ----------------
# Kubernetes: the JSON schemas bundled in the PyPI wheel of kubernetes-validate (hash-pinned).
# prometheus-operator CRDs (ServiceMonitor, PrometheusRule, ...): from its Go module, at the
# operator version that the pinned kube-prometheus-stack ships. Converted by
# tests/chart/offline_schemas.py into .tools/schemas/{kubernetes,crds}.
schemas_stamp="kubernetes-validate $KUBERNETES_VALIDATE_VERSION ($K8S_SCHEMA_VERSIONS), prometheus-operator $PROMETHEUS_OPERATOR_VERSION"
if [ "$(cat .tools/schemas/.version 2>/dev/null)" != "$schemas_stamp" ]; then
  log "laying out offline schemas: $schemas_stamp"
  rm -rf .tools/schemas .tools/downloads/kubernetes-validate
  mkdir -p .tools/schemas .tools/downloads/kubernetes-validate
  printf 'kubernetes-validate==%s --hash=sha256:%s\n' "$KUBERNETES_VALIDATE_VERSION" "$KUBERNETES_VALIDATE_SHA256" \
    > .tools/downloads/kubernetes-validate/requirements.txt
  .venv/bin/pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --require-hashes -r .tools/downloads/kubernetes-validate/requirements.txt \
    -d .tools/downloads/kubernetes-validate
  # shellcheck disable=SC2086  # the version list splits on purpose
  .venv/bin/python tests/chart/offline_schemas.py kubernetes \
    .tools/downloads/kubernetes-validate/kubernetes_validate-"$KUBERNETES_VALIDATE_VERSION"-py3-none-any.whl \
    $K8S_SCHEMA_VERSIONS .tools/schemas/kubernetes
  operator_dir=$(go mod download -json "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  .venv/bin/python tests/chart/offline_schemas.py crds \
    "$operator_dir/example/prometheus-operator-crd" .tools/schemas/crds
  echo "$schemas_stamp" > .tools/schemas/.version
fi

log "done: .venv and .tools/bin are ready; run scripts/test.sh"
