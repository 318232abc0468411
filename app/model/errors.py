"""Why a model cannot be served: raised before the server binds its port, so that `python -m
app` exits at once (status 2) with one line saying what to set or what differs. Here, apart
from the modules that need torch, so that a process without torch can raise and catch them."""

from __future__ import annotations


class WeightsUnavailableError(RuntimeError):
    """No usable weights: the message says what to set. Start-up stops on it."""


class ModelPackageError(WeightsUnavailableError):
    """The build-time model (OpenVINO IR and its manifest in SERVING_MODEL_DIR) is missing,
    damaged, or not the model the settings ask for. Never a silent fallback to other weights."""
