# resnet-serving images: two targets of one file, both non-root and read-only friendly.
#
#   docker build -t resnet-serving:local .                       # cpu (the default)
#   docker build --target gpu -t resnet-serving:local-gpu .      # gpu
#   docker run --rm -p 8000:8000 --read-only --tmpfs /tmp resnet-serving:local
#
# cpu: Python slim, OpenVINO, numpy, Pillow, FastAPI/uvicorn and the rest; no torch, no
#      torchvision. The model is converted to OpenVINO IR when the image is built (the convert
#      stage) and baked into /opt/model with its manifest (app/model/ir); start-up reads it.
# gpu: the torch/CUDA runtime (PyPI's torch), the weights baked into torch's hub cache; the
#      model is built in process at start-up (torch on a GPU; OpenVINO on a CPU).
#
# No `# syntax=` line: BuildKit's built-in Dockerfile frontend builds this file as it is, so a
# build needs no frontend image from a registry (offline builds, scripts/cluster.sh).
#
# Stages: runtime-base (user, labels, plumbing) -> cpu-deps (the torch-free venv, slimmed) ->
# convert (torch, on the build platform: weights -> IR) -> gpu-deps -> gpu-weights -> gpu ->
# cpu (last: the default target).
# Build args:
#   PYTHON_IMAGE     base of every stage, pinned by version and digest (Dependabot bumps it);
#                    an offline build passes a local Python 3.11 image instead
#   TORCH_INDEX_URL  torch wheel index of the convert stage: the CPU-only index by default
#                    (requirements/build-cpu.txt); empty = PyPI (requirements/build-pypi.txt, the
#                    CUDA build: larger, but nothing of that stage ships). The gpu target always
#                    installs PyPI's CUDA torch (requirements/runtime-gpu.txt)
#   MODEL_NAME       torchvision architecture baked in (resnet50)
#   MODEL_WEIGHTS    torchvision weights name (DEFAULT = IMAGENET1K_V2 for resnet50), or `random`:
#                    the image serves random weights (smoke tests, clusters without the weights)
#   MODEL_PRECISION  cpu target: auto, fp32 or bf16 (an fp32 IR; the CPU decides at start-up), or
#                    int8 (quantized and calibrated here: start-up does no calibration). It is
#                    the image's SERVING_PRECISION; the IR refuses to start with another
# Weights from a local file instead of a download: put torchvision's file (resnet50-11ad3fa6.pth)
# in weights/ at the repository root (git-ignored); its hash is checked like a download's.
# Build secret (never stored in a layer):
#   ca_bundle        extra CA bundle for pip and the weights download behind a TLS-intercepting
#                    proxy: docker build --secret id=ca_bundle,src=/etc/ssl/certs/ca-certificates.crt
# Configuration at run time only through SERVING_* environment variables (README "Settings").

ARG PYTHON_IMAGE=python:3.11.17-slim-trixie@sha256:45037981b62b34b44602584fccbc4d884d5f7dc92c7ee86bb38a698a79fe1e51

# ---- runtime-base: what both targets share: the user, the labels, the plumbing ---------------
FROM ${PYTHON_IMAGE} AS runtime-base
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
    SERVING_ALLOW_WEIGHTS_DOWNLOAD=false
WORKDIR /srv

# ---- cpu-deps: the torch-free runtime, hash-locked (requirements/runtime-cpu.txt) ------------
FROM ${PYTHON_IMAGE} AS cpu-deps
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /build
COPY requirements/pip.txt requirements/runtime-cpu.txt ./requirements/
# The pinned pip first (an old base pip refuses the lock), then every file checked against the
# lock's sha256, nothing built from source, nothing unlisted; pip check proves the set complete.
# Then, in the same layer (so that no cached layer holds the unslimmed venv), what the server
# never runs goes (~125 MB; each item's cost: docs/PERFORMANCE.md, "The image"): OpenVINO's GPU
# and NPU plugins and the GPU kernel cache, every frontend but the IR reader (ONNX, TensorFlow,
# TF Lite, PaddlePaddle, PyTorch, JAX, GGUF: the model arrives as IR), the C/C++ headers and
# CMake files, the conversion tools, setuptools (only venv creation put it there), test suites,
# and pip itself. The cpu stage below proves the rest still serves the IR.
RUN --mount=type=cache,target=/root/.cache/pip,sharing=locked \
    --mount=type=secret,id=ca_bundle \
    if [ -f /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi \
    && pip install --require-hashes --only-binary=:all: -r requirements/pip.txt \
    && pip install --require-hashes --only-binary=:all: -r requirements/runtime-cpu.txt \
    && pip check \
    && site=$(python -c "import sysconfig; print(sysconfig.get_path('purelib'))") \
    && ov="$site/openvino" \
    && rm -f "$ov"/libs/libopenvino_intel_gpu_plugin.so "$ov"/libs/libopenvino_intel_npu_plugin.so \
        "$ov"/libs/cache.json \
    && for frontend in onnx tensorflow tensorflow_lite paddle pytorch jax gguf; do \
        rm -f "$ov"/libs/libopenvino_"$frontend"_frontend.so.*; done \
    && rm -rf "$ov/include" "$ov/cmake" "$ov/tools" "$ov/torch" "$ov/frontend/onnx" \
        "$ov/frontend/tensorflow" "$ov/frontend/paddle" "$ov/frontend/pytorch" "$ov/frontend/jax" \
    && find "$site" -depth -type d -name tests -exec rm -rf {} + \
    && python -m pip uninstall --yes --quiet setuptools \
    && python -m pip uninstall --yes --quiet pip \
    && ls "$ov/libs/libopenvino_ir_frontend.so".* "$ov/libs/libopenvino_intel_cpu_plugin.so"

# ---- convert: the model built once, as OpenVINO IR (app/model/ir/build.py) -------------------
# On the build platform: IR is the same on every architecture, so a multi-arch build converts
# once, natively, instead of running torch under emulation for each platform.
# hadolint ignore=DL3029
FROM --platform=$BUILDPLATFORM ${PYTHON_IMAGE} AS convert
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH \
    TORCH_HOME=/opt/torch
RUN python -m venv /opt/venv
WORKDIR /build
COPY requirements/pip.txt requirements/build-cpu.txt requirements/build-pypi.txt ./requirements/
# torch, torchvision, OpenVINO and NNCF, hash-locked for the chosen torch index (any other index
# stops the build: there is no lock for it). Nothing of this stage but /opt/model ships.
RUN --mount=type=cache,target=/root/.cache/pip,sharing=locked \
    --mount=type=secret,id=ca_bundle \
    if [ -f /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi \
    && case "${TORCH_INDEX_URL}" in \
        "") lock=requirements/build-pypi.txt ;; \
        */cpu | */cpu/) lock=requirements/build-cpu.txt ;; \
        *) echo "no lock for TORCH_INDEX_URL=${TORCH_INDEX_URL} (requirements/: PyPI's torch, or the CPU-only index's)" >&2; exit 1 ;; \
    esac \
    && pip install --require-hashes --only-binary=:all: -r requirements/pip.txt \
    && pip install --require-hashes --only-binary=:all: \
        ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} -r "$lock" \
    && pip check
ARG MODEL_NAME=resnet50
ARG MODEL_WEIGHTS=DEFAULT
ARG MODEL_PRECISION=auto
# app/ is read from the build context, not copied. The weights: torchvision's download into
# $TORCH_HOME, hash-checked; or the same file from weights/ in the context, same check; or none
# for `random`. Then convert (and for int8, calibrate), save the IR with its manifest, reopen it
# as the server does and compare its answers with torch's: a bad conversion fails the build.
RUN --mount=type=bind,target=/context \
    --mount=type=secret,id=ca_bundle \
    if [ -f /run/secrets/ca_bundle ]; then export SSL_CERT_FILE=/run/secrets/ca_bundle; fi \
    && case "${MODEL_PRECISION}" in \
        int8) ir=int8 ;; \
        auto | fp32 | bf16) ir=fp32 ;; \
        *) echo "MODEL_PRECISION=${MODEL_PRECISION}: auto, fp32, bf16 or int8" >&2; exit 1 ;; \
    esac \
    && PYTHONPATH=/context python -m app.model.ir.build "${MODEL_NAME}" "${MODEL_WEIGHTS}" \
        --precision "$ir" --out /opt/model --from /context/weights \
    && ls -l /opt/model

# ---- gpu-deps: torch with CUDA (PyPI), hash-locked (requirements/runtime-gpu.txt) ------------
FROM ${PYTHON_IMAGE} AS gpu-deps
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH
# strip (binutils) shrinks torch's shared libraries below. This stage only: nothing of it
# reaches the gpu image but /opt/venv, and the forward pass below fails the build if stripping
# broke torch.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends binutils \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
WORKDIR /build
COPY requirements/pip.txt requirements/runtime-gpu.txt ./requirements/
# In the same layer as the install (so no cached layer holds the unslimmed venv), ~160 MB go:
# C++ headers and protoc, test suites, pip itself, and the static symbol tables of torch's two
# large libraries (.dynsym, which the dynamic loader uses, stays).
RUN --mount=type=cache,target=/root/.cache/pip,sharing=locked \
    --mount=type=secret,id=ca_bundle \
    if [ -f /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi \
    && pip install --require-hashes --only-binary=:all: -r requirements/pip.txt \
    && pip install --require-hashes --only-binary=:all: -r requirements/runtime-gpu.txt \
    && pip check \
    && site=$(python -c "import sysconfig; print(sysconfig.get_path('purelib'))") \
    && rm -rf "$site/torch/include" "$site"/torch/bin/protoc* \
    && find "$site" -depth -type d -name tests -exec rm -rf {} + \
    && strip --strip-unneeded "$site/torch/lib/libtorch_cpu.so" "$site/torch/lib/libtorch_python.so" \
    && python -m pip uninstall --yes --quiet pip \
    && python -c "import torch, torchvision, fastapi, uvicorn, sympy; m = torchvision.models.resnet18().eval(); print('torch', torch.__version__, 'cuda', torch.version.cuda, 'forward', tuple(m(torch.rand(1, 3, 64, 64)).shape))"

# ---- gpu-weights: the configured model's weights in torch's hub cache ------------------------
FROM gpu-deps AS gpu-weights
ARG MODEL_NAME=resnet50
ARG MODEL_WEIGHTS=DEFAULT
ENV TORCH_HOME=/opt/torch
# app/model/bake.py, read from the build context: a download, the same file from weights/, or
# nothing for `random`, where the app's weights resolution looks.
RUN --mount=type=bind,target=/context \
    --mount=type=secret,id=ca_bundle \
    if [ -f /run/secrets/ca_bundle ]; then export SSL_CERT_FILE=/run/secrets/ca_bundle; fi \
    && mkdir -p /opt/torch/hub/checkpoints \
    && PYTHONPATH=/context python -m app.model.bake "${MODEL_NAME}" "${MODEL_WEIGHTS}" --from /context/weights \
    && ls -l /opt/torch/hub/checkpoints/

# ---- gpu: torch/CUDA, the weights baked, the model built at start-up -------------------------
FROM runtime-base AS gpu
ARG MODEL_NAME=resnet50
ARG MODEL_WEIGHTS=DEFAULT
ENV TORCH_HOME=/opt/torch \
    SERVING_MODEL_NAME=${MODEL_NAME} \
    SERVING_MODEL_WEIGHTS=${MODEL_WEIGHTS} \
    SERVING_MODEL_DIR=
COPY --from=gpu-deps /opt/venv /opt/venv
COPY --from=gpu-weights /opt/torch /opt/torch
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

# ---- cpu (the default target): the torch-free venv, the IR, the app --------------------------
FROM runtime-base AS cpu
ARG MODEL_NAME=resnet50
ARG MODEL_WEIGHTS=DEFAULT
ARG MODEL_PRECISION=auto
ENV SERVING_MODEL_NAME=${MODEL_NAME} \
    SERVING_MODEL_WEIGHTS=${MODEL_WEIGHTS} \
    SERVING_PRECISION=${MODEL_PRECISION} \
    SERVING_MODEL_DIR=/opt/model
COPY --from=cpu-deps /opt/venv /opt/venv
COPY --from=convert /opt/model /opt/model
COPY app/ /srv/app/
# Bytecode compiled now, as root: the root filesystem is read-only at run time. Then the proof
# that this image serves: no torch to import, and the app's own start-up path opens the IR
# (manifest checked against the settings above, files against their hashes), compiles it on the
# slimmed OpenVINO and answers a batch.
RUN python -m compileall -q /srv/app \
    && python -c "import importlib.util as u; assert u.find_spec('torch') is None and u.find_spec('torchvision') is None, 'torch in the cpu image'" \
    && python -c "import asyncio, app.__main__; from app.model.host import ModelHost; from app.settings.config import Settings; from app.telemetry.metrics import Metrics; h = ModelHost(Settings(), Metrics()); e = asyncio.run(h.load()); h.close(); print('serves', h.status())"
USER 10001:10001
EXPOSE 8000 8001
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('SERVING_PORT', '8000') + '/health', timeout=4)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "app"]
