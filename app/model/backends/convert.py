"""torchvision module -> OpenVINO model, through `torch.export`: at image build time
(app/model/ir/build.py), or at start-up where no build-time model is given (development, tests,
the GPU image falling back to OpenVINO on a CPU). The only module of the OpenVINO path that
needs torch."""

from __future__ import annotations

import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from torch import nn

from app.model.backends.openvino_backend import import_openvino

_export_thread: ThreadPoolExecutor | None = None
_export_thread_lock = threading.Lock()


def _exporter() -> ThreadPoolExecutor:
    """One long-lived thread for every torch.export in the process. torch 2.11 (CUDA build, no
    GPU) ties a device guard to the thread of the first export; exporting again after that
    thread had ended crashed the process (a segfault: a second app in one test process, a new
    model thread). Exports on this thread only, which lives as long as the process."""
    global _export_thread
    with _export_thread_lock:
        if _export_thread is None:
            _export_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="export")
        return _export_thread


def _export(model: nn.Module, image_size: int) -> Any:
    ov = import_openvino()
    batch = torch.export.Dim("batch", min=1, max=1024)
    example = torch.zeros(2, 3, image_size, image_size)
    with warnings.catch_warnings():
        # torch's own pytree internals, on every export in torch 2.11: not ours to act on.
        warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
        exported = torch.export.export(
            model.eval(), (example,), dynamic_shapes=({0: batch},), strict=False
        )
        return ov.convert_model(exported)


def convert(model: nn.Module, image_size: int) -> Any:
    """torchvision module -> ov.Model with a dynamic batch dimension and a fixed image size.

    Through `torch.export` (a few seconds for ResNet-50 on a loaded 2-CPU machine, where the
    converter's default TorchScript tracing took 15-27 s and is deprecated in torch 2.11)."""
    ov_model = _exporter().submit(_export, model, image_size).result()
    ov_model.reshape([-1, 3, image_size, image_size])
    return ov_model
