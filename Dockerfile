# resnet-serving image: CPU torch, the model's weights baked in, non-root, read-only friendly.
#
#   docker build -t resnet-serving:local .
#   docker run --rm -p 8000:8000 --read-only --tmpfs /tmp resnet-serving:local
#
# No `# syntax=` line: BuildKit's built-in Dockerfile frontend builds this file as it is, so a
# build needs no frontend image from a registry (offline builds, scripts/cluster.sh).
#
# Stages: builder (dependencies into /opt/venv) -> weights (the configured model's weights into
# /opt/torch, hash-checked) -> runtime (slim: venv + app + weights).
# Build args:
#   PYTHON_IMAGE     base of every stage, pinned by version and digest (Dependabot bumps it);
#                    an offline build passes a local Python 3.11 image instead
#   TORCH_INDEX_URL  torch wheel index: the CPU-only index by default (PyPI's wheels carry CUDA,
#                    ~4 GB more); empty = PyPI only (the CUDA 13 build). Each has its own
#                    hash-locked file: requirements/runtime-cpu.txt, requirements/runtime-pypi.txt
#   MODEL_NAME       torchvision architecture whose weights are baked in (resnet50)
#   MODEL_WEIGHTS    torchvision weights name (DEFAULT = IMAGENET1K_V2 for resnet50), or
#                    `random`: nothing baked, the image serves random weights (smoke tests)
# Weights from a local file instead of a download: put torchvision's file (resnet50-11ad3fa6.pth)
# in weights/ at the repository root (git-ignored); its hash is checked like a download's.
# Build secret (never stored in a layer):
#   ca_bundle        extra CA bundle for pip and the weights download behind a TLS-intercepting
#                    proxy: docker build --secret id=ca_bundle,src=/etc/ssl/certs/ca-certificates.crt
# Configuration at run time only through SERVING_* environment variables (README "Settings").

ARG PYTHON_IMAGE=python:3.11.17-slim-trixie@sha256:45037981b62b34b44602584fccbc4d884d5f7dc92c7ee86bb38a698a79fe1e51

# ---- builder: the Python dependencies, hash-locked (requirements/), into /opt/venv ----------
FROM ${PYTHON_IMAGE} AS builder
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# strip (binutils) shrinks torch's shared libraries below. Builder stage only: nothing of it
# reaches the runtime image, and the smoke run below fails the build if stripping broke torch.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends binutils \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
WORKDIR /build
COPY requirements/pip.txt requirements/runtime-cpu.txt requirements/runtime-pypi.txt ./requirements/
# [project].dependencies and everything below them, each file pinned by its sha256: the lock
# that scripts/lock.sh writes from pyproject.toml for the chosen torch index (any other index
# stops the build: there is no lock for it). pip refuses a file whose hash the lock does not
# list, a package it does not list, and source distributions (a build would fetch its build
# dependencies unhashed); pip check proves the set complete. The check after it proves the
# CPU build won where the CPU index was asked for. The pinned pip (requirements/pip.txt) goes in
# first, so that the build does not depend on the base image's pip (an old one refuses the lock).
# Then, in the same layer (so no cached layer holds the unslimmed venv), ~160 MB go: C++ headers
# and protoc (only for building extensions), test suites, pip itself, and the static symbol
# tables of torch's two large libraries (.dynsym, which the dynamic loader uses, stays). A
# resnet forward pass proves torch still works.
RUN --mount=type=cache,target=/root/.cache/pip,sharing=locked \
    --mount=type=secret,id=ca_bundle \
    if [ -f /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi \
    && case "${TORCH_INDEX_URL}" in \
        "") lock=requirements/runtime-pypi.txt ;; \
        */cpu | */cpu/) lock=requirements/runtime-cpu.txt ;; \
        *) echo "no lock for TORCH_INDEX_URL=${TORCH_INDEX_URL} (requirements/: PyPI's torch, or the CPU-only index's)" >&2; exit 1 ;; \
    esac \
    && pip install --require-hashes --only-binary=:all: -r requirements/pip.txt \
    && pip install --require-hashes --only-binary=:all: \
        ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} -r "$lock" \
    && pip check \
    && python -c "import sys, torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.version.cuda); sys.exit(1 if sys.argv[1].rstrip('/').endswith('/cpu') and torch.version.cuda else 0)" "${TORCH_INDEX_URL}" \
    && site=$(python -c "import sysconfig; print(sysconfig.get_path('purelib'))") \
    && rm -rf "$site/torch/include" "$site"/torch/bin/protoc* \
    && find "$site" -depth -type d -name tests -exec rm -rf {} + \
    && strip --strip-unneeded "$site/torch/lib/libtorch_cpu.so" "$site/torch/lib/libtorch_python.so" \
    && python -m pip uninstall --yes --quiet pip \
    && python -c "import torch, torchvision, fastapi, uvicorn, sympy; m = torchvision.models.resnet18().eval(); print('forward', tuple(m(torch.rand(1, 3, 64, 64)).shape))"

# ---- weights: the configured model's weights, baked once at build time -----------------------
FROM builder AS weights
ARG MODEL_NAME=resnet50
ARG MODEL_WEIGHTS=DEFAULT
ENV TORCH_HOME=/opt/torch
# app/model/bake.py (read from the build context, not copied): torchvision's download into
# $TORCH_HOME/hub/checkpoints/<file from the weights' URL>, hash-checked; or the same file from
# weights/ in the context, same check; or nothing for MODEL_WEIGHTS=random. The app's weights
# resolution looks exactly there.
RUN --mount=type=bind,target=/context \
    --mount=type=secret,id=ca_bundle \
    if [ -f /run/secrets/ca_bundle ]; then export SSL_CERT_FILE=/run/secrets/ca_bundle; fi \
    && mkdir -p /opt/torch/hub/checkpoints \
    && PYTHONPATH=/context python -m app.model.bake "${MODEL_NAME}" "${MODEL_WEIGHTS}" --from /context/weights \
    && ls -l /opt/torch/hub/checkpoints/

# ---- runtime: slim, non-root, nothing but the venv, the app and the weights ------------------
FROM ${PYTHON_IMAGE} AS runtime
ARG MODEL_NAME=resnet50
ARG MODEL_WEIGHTS=DEFAULT
ARG VERSION=0.1.0
ARG REVISION=unknown

LABEL org.opencontainers.image.title="resnet-serving" \
      org.opencontainers.image.description="Serves a pretrained torchvision ResNet image classifier over HTTP" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

# UID/GID 10001 = the Helm chart's runAsUser/runAsGroup/fsGroup. Home is /tmp: the only
# writable place (an emptyDir in Kubernetes, --tmpfs /tmp with docker run --read-only).
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
        --shell /usr/sbin/nologin app

ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    TORCH_HOME=/opt/torch \
    SERVING_MODEL_NAME=${MODEL_NAME} \
    SERVING_MODEL_WEIGHTS=${MODEL_WEIGHTS} \
    SERVING_ALLOW_WEIGHTS_DOWNLOAD=false

COPY --from=builder /opt/venv /opt/venv
COPY --from=weights /opt/torch /opt/torch
WORKDIR /srv
COPY app/ /srv/app/
# Bytecode compiled now, as root: the root filesystem is read-only at run time. Then the app's
# own weights resolution must find the baked file in torch's cache (no download allowed).
RUN python -m compileall -q /srv/app \
    && python -c "import app.main, app.__main__; from app.model.weights import resolve_weights; s = resolve_weights('${MODEL_NAME}', '${MODEL_WEIGHTS}', allow_download=False); assert s.kind in ('cache', 'random'), s; print('weights', s.weights_id, s.path)"

USER 10001:10001
# HTTP (SERVING_PORT) and the Open Inference Protocol over gRPC (SERVING_GRPC_PORT).
EXPOSE 8000 8001
# /health = liveness (the process answers); the port follows SERVING_PORT.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('SERVING_PORT', '8000') + '/health', timeout=4)"]
# Exec form: python is PID 1 and gets SIGTERM itself; uvicorn then stops accepting, finishes
# in-flight requests and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "app"]
