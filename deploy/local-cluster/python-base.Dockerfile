# A stand-in for the Dockerfile's pinned python:3.11-slim base where no registry is reachable
# (scripts/cluster.sh): Debian bookworm from a local debootstrap import, trimmed like the official
# slim images (local/debian:bookworm-slim), with Debian's Python 3.11. Passed to the project's
# Dockerfile as PYTHON_IMAGE; nothing else of the Dockerfile changes.
FROM local/debian:bookworm-slim
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python-is-python3 ca-certificates \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*
