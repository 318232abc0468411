"""The runtime's choices as plain enums, shared by Settings and the runtime without making
settings import torch."""

from __future__ import annotations

from enum import StrEnum


class Precision(StrEnum):
    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"


class DeviceChoice(StrEnum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"
