"""The runtime's choices as plain enums, shared by Settings and the runtime without making
settings import torch."""

from __future__ import annotations

from enum import StrEnum


class Precision(StrEnum):
    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"
    INT8 = "int8"  # OpenVINO only: post-training quantization (NNCF), calibrated at start-up


class DeviceChoice(StrEnum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


class BackendChoice(StrEnum):
    """Which inference engine runs the model. `auto`: OpenVINO on a CPU, torch on a GPU (and
    torch when OpenVINO cannot load)."""

    AUTO = "auto"
    OPENVINO = "openvino"
    TORCH = "torch"
