"""The machine a result was measured on: every result records it (the machines are shared and
unlike one another; a figure means little without the CPU it ran on)."""

from __future__ import annotations

import platform
from datetime import UTC, datetime
from typing import Any

import torch

from app.model.cpu import available_cpus, cpu_flags, cpu_has_native_bf16, cpu_model_name
from bench.torchserve import server as torchserve


def machine_info() -> dict[str, Any]:
    """CPU model, CPUs this process may use, the instruction sets that decide the model's speed
    (AMX, AVX512-BF16, VNNI), software versions, and the GPU if any."""
    flags = cpu_flags()
    try:
        from app.model.backends.openvino_backend import import_openvino

        openvino: str | None = import_openvino().get_version()
    except ImportError:
        openvino = None
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model_name(),
        "cpus_available": available_cpus(),
        "bf16_native": cpu_has_native_bf16(flags),
        "amx": "amx_bf16" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "avx512_vnni": "avx512_vnni" in flags,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "openvino": openvino,
        "torchserve": torchserve.installed_version(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
