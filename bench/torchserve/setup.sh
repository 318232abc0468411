#!/usr/bin/env bash
# Installs TorchServe 0.12 as an optional benchmark peer (bench/run_all.py), pinned, into
# .tools/torchserve-venv. Not part of scripts/install.sh: the product does not need it.
#
# The venv shares the project's torch and torchvision instead of downloading them again (torch
# from PyPI is the CUDA build, several GB): a .pth file appends the project venv's
# site-packages to the new venv's path, after its own. So TorchServe runs exactly the project's
# torch/torchvision versions, what pip installs here lands in this venv only (the project venv
# is never modified), and a package TorchServe needed in another version would shadow the
# project's copy for TorchServe alone.
#
# Environment knobs:
#   TORCHSERVE_VENV  where to install (default .tools/torchserve-venv)
#   SKIP_APT=1       do not install Java (you installed a JRE 17+ yourself)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
VENV=${TORCHSERVE_VENV:-$ROOT/.tools/torchserve-venv}
PROJECT_PYTHON=$ROOT/.venv/bin/python

# --- pinned versions (one place) -------------------------------------------------------------
TORCHSERVE_VERSION=0.12.0
MODEL_ARCHIVER_VERSION=0.12.0
# TorchServe 0.12 does not declare PyYAML, yet its workers import it (without it they crash
# with "No module named 'yaml'" while the frontend keeps restarting them); its stock vision
# handlers import captum. Our handler needs neither, but a TorchServe install is not complete
# without them.
PYYAML_VERSION=$(sed -n "s/^pyyaml==\([^ ]*\).*/\1/p" requirements/dev-pypi.txt)  # the project's own pin: no second copy
CAPTUM_VERSION=0.9.0
JAVA_PACKAGE=openjdk-17-jre-headless

log() { printf '\033[1m==> %s\033[0m\n' "$*"; }

if [ ! -x "$PROJECT_PYTHON" ]; then
  echo "no $PROJECT_PYTHON: run scripts/install.sh first (TorchServe reuses its torch)" >&2
  exit 2
fi

if ! command -v java >/dev/null; then
  if [ "${SKIP_APT:-0}" = 1 ]; then
    echo "java not found and SKIP_APT=1: install a JRE 17+ ($JAVA_PACKAGE)" >&2
    exit 2
  fi
  log "installing $JAVA_PACKAGE (TorchServe's frontend is Java)"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$JAVA_PACKAGE"
fi

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  # The project venv's interpreter: venv builds the new one from the same base Python.
  "$PROJECT_PYTHON" -m venv "$VENV"
fi
project_site=$("$PROJECT_PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
venv_site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$project_site" >"$venv_site/resnet-serving-project.pth"

log "installing torchserve $TORCHSERVE_VERSION, torch-model-archiver $MODEL_ARCHIVER_VERSION (pinned)"
"$VENV/bin/pip" install --quiet --disable-pip-version-check \
  "torchserve==$TORCHSERVE_VERSION" "torch-model-archiver==$MODEL_ARCHIVER_VERSION" \
  "pyyaml==$PYYAML_VERSION" "captum==$CAPTUM_VERSION"

# The check that matters: TorchServe, the archiver and the project's torch in one interpreter.
"$VENV/bin/python" - <<'PY'
import torch, torchvision, ts, model_archiver, yaml  # noqa: E401
print(f"torchserve venv ready: torch {torch.__version__}, torchvision {torchvision.__version__}")
PY
