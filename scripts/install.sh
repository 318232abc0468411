#!/usr/bin/env bash
# Installs everything needed to run and test resnet-serving, pinned, into this checkout:
#   .venv/        Python dependencies (pyproject.toml + constraints.txt)
#   .tools/bin/   helm, helm-unittest, kubeconform, actionlint (Go module proxy, pinned)
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
APT_PACKAGES=(prometheus nginx-light wrk)

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
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v wrk >/dev/null || missing+=(wrk)
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
go_tool helm-unittest github.com/helm-unittest/helm-unittest/cmd/helm-unittest "$HELM_UNITTEST_VERSION"
go_tool kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION"
go_tool actionlint github.com/rhysd/actionlint/cmd/actionlint "$ACTIONLINT_VERSION"

log "done: .venv and .tools/bin are ready; run scripts/test.sh"
