"""The model runtime's paths: backend, precision and device selection, each backend's accuracy
guard against fp32 (bf16 here; int8 in tests/model/test_int8.py), the compiled path, the
fallback from OpenVINO to torch, and the runtime as the service reports it."""

from __future__ import annotations

import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from app.main import create_app
from app.model.cpu import cpu_has_native_bf16
from app.model.options import BackendChoice, DeviceChoice, Precision
from app.model.runtime import resolve_backend, select_device, select_precision
from app.settings.config import Settings
from conftest import make_settings, wait_ready
from helpers.accuracy import (
    assert_keeps_top1_and_four_of_top5,
    photos_batch,
    reference_logits,
    runtime,
)
from helpers.images import PHOTOS

BACKENDS = [BackendChoice.OPENVINO, BackendChoice.TORCH]


@pytest.mark.parametrize(
    ("backend", "device", "precision", "compile_model", "expected"),
    [
        (BackendChoice.AUTO, DeviceChoice.CPU, Precision.AUTO, False, BackendChoice.OPENVINO),
        (BackendChoice.AUTO, DeviceChoice.CPU, Precision.INT8, False, BackendChoice.OPENVINO),
        (BackendChoice.AUTO, DeviceChoice.CPU, Precision.BF16, True, BackendChoice.TORCH),
        (BackendChoice.AUTO, DeviceChoice.CUDA, Precision.AUTO, False, BackendChoice.TORCH),
        (BackendChoice.TORCH, DeviceChoice.CPU, Precision.AUTO, False, BackendChoice.TORCH),
        (BackendChoice.OPENVINO, DeviceChoice.AUTO, Precision.FP32, False, BackendChoice.OPENVINO),
    ],
)
def test_auto_backend_is_openvino_on_a_cpu_and_torch_on_a_gpu(
    backend: BackendChoice,
    device: DeviceChoice,
    precision: Precision,
    compile_model: bool,
    expected: BackendChoice,
) -> None:
    assert resolve_backend(backend, device, precision, compile_model) is expected


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"backend": "openvino", "device": "cuda"}, "SERVING_BACKEND=openvino runs on the CPU"),
        ({"backend": "openvino", "compile": True}, "SERVING_COMPILE=true is torch.compile"),
        ({"backend": "torch", "precision": "int8"}, "SERVING_PRECISION=int8 needs"),
        ({"device": "cuda", "precision": "int8"}, "SERVING_PRECISION=int8 needs"),
    ],
)
def test_settings_refuse_what_no_backend_runs(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings(_env_file=None, **settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"avx2", "avx512f", "avx512_bf16"}, True),  # Zen 4, Cooper Lake
        ({"avx512f", "amx_tile", "amx_bf16"}, True),  # Sapphire Rapids
        ({"avx2", "avx512f", "avx512_vnni"}, False),  # Ice Lake: bf16 would be emulated
        (set(), False),
    ],
)
def test_native_bf16_detection(flags: set[str], expected: bool) -> None:
    assert cpu_has_native_bf16(frozenset(flags)) is expected


def test_explicit_precision_wins_over_auto() -> None:
    cpu = "cpu"
    assert select_precision(Precision.FP32, cpu) is Precision.FP32
    assert select_precision(Precision.BF16, cpu) is Precision.BF16
    auto = select_precision(Precision.AUTO, cpu)
    assert auto is (Precision.BF16 if cpu_has_native_bf16() else Precision.FP32)


def test_cuda_requested_without_a_gpu_fails_clearly() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(RuntimeError, match="SERVING_DEVICE=cuda"):
        select_device(DeviceChoice.CUDA)
    assert select_device(DeviceChoice.AUTO) == "cpu"


@pytest.mark.parametrize("backend", BACKENDS)
def test_fp32_path_equals_the_plain_model(backend: BackendChoice) -> None:
    """torch: folding batch norm and channels_last change nothing beyond float rounding;
    OpenVINO: neither do its conversion and its fused kernels in f32."""
    x = photos_batch("resnet18")
    fast = runtime("resnet18", precision=Precision.FP32, backend=backend)
    assert fast.info.backend == backend.value
    assert fast.info.dtype == "float32"
    assert float(np.abs(fast.logits(x) - reference_logits("resnet18", x)).max()) < 1e-3


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "model_name", ["resnet18", pytest.param("resnet50", marks=pytest.mark.slow)]
)
def test_bf16_keeps_top1_and_four_of_top5(
    model_name: str, backend: BackendChoice, record_property: Callable[[str, object], None]
) -> None:
    """The accuracy guard for the fast path, on real photographs, against torchvision's fp32
    reference. With random weights the classes are less separated than with trained ones, so
    this is the weaker check; the GitHub workflow repeats it with the real ImageNet weights
    (tests/model/test_equivalence.py)."""
    x = photos_batch(model_name)
    reference = reference_logits(model_name, x)
    bf16 = runtime(model_name, precision=Precision.BF16, backend=backend).logits(x)
    max_diff = float(np.abs(reference - bf16).max())
    record_property("max_logit_difference", max_diff)
    print(f"{model_name} {backend}: max |logit fp32 - logit bf16| = {max_diff:.4f}")
    assert_keeps_top1_and_four_of_top5(reference, bf16)


def test_auto_falls_back_to_torch_when_openvino_cannot_load(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from app.model.backends import openvino_backend

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no CPU plugin here")

    monkeypatch.setattr(openvino_backend.OpenVINOBackend, "__init__", broken)
    fallback = runtime("resnet18", precision=Precision.FP32, backend=BackendChoice.AUTO)
    assert fallback.info.backend == "torch"
    assert "falling back to torch" in caplog.text
    with pytest.raises(RuntimeError, match="no CPU plugin here"):
        runtime("resnet18", precision=Precision.FP32, backend=BackendChoice.OPENVINO)


def test_openvino_loads_again_from_a_new_model_thread() -> None:
    """Each app has its own model thread; a second app in one process (tests, benchmarks)
    converts again from a new thread after the first one ended. That once crashed the process
    in torch.export (app/model/backends/openvino_backend.py, `_exporter`)."""
    for _ in range(2):
        with ThreadPoolExecutor(max_workers=1) as model_thread:
            built = model_thread.submit(
                runtime, "resnet18", precision=Precision.FP32, backend=BackendChoice.OPENVINO
            ).result()
        assert built.info.backend == "openvino"


def test_openvino_sends_no_usage_telemetry() -> None:
    """OpenVINO's converter would report usage to a third party unless opted out in $HOME:
    the backend keeps its telemetry package from being imported at all."""
    runtime("resnet18", precision=Precision.FP32, backend=BackendChoice.OPENVINO)
    assert "openvino" in sys.modules
    assert sys.modules.get("openvino_telemetry") is None


@pytest.mark.slow
def test_compiled_path_matches_eager_for_every_batch_size() -> None:
    compiled = runtime("resnet18", precision=Precision.FP32, compile_model=True)
    eager = runtime("resnet18", precision=Precision.FP32, backend=BackendChoice.TORCH)
    assert compiled.info.backend == "torch"  # auto + compile = torch
    assert compiled.info.compiled
    compiled.warm_up(range(1, 5), 224)
    x = photos_batch("resnet18")
    for size in (1, 3, 4):
        diff = float(np.abs(compiled.logits(x[:size]) - eager.logits(x[:size])).max())
        assert diff < 1e-3, (size, diff)


def openvino_takes_a_bf16_hint() -> bool:
    """Whether OpenVINO's CPU plugin, asked for bf16, runs bf16 here, asked of OpenVINO itself
    with a one-layer model: where bf16 is native (AMX, AVX512-BF16) it does; on AVX2 it runs f32;
    on AVX512 CPUs without BF16 (Ice Lake) OpenVINO 2026 emulates bf16 and says so."""
    import openvino as ov

    model = ov.convert_model(torch.nn.Conv2d(3, 4, 3).eval(), example_input=torch.rand(1, 3, 8, 8))
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "bf16"})
    compiled(np.zeros((1, 3, 8, 8), dtype=np.float32))
    return bool(compiled.get_property("INFERENCE_PRECISION_HINT").to_string() == "bf16")


@pytest.mark.parametrize("backend", BACKENDS)
def test_service_reports_the_path_it_runs(backend: BackendChoice) -> None:
    settings = make_settings(precision="bf16", max_batch_size=2, backend=backend.value)
    # OpenVINO reports what its CPU plugin really runs: bf16 where native, and where its plugin
    # takes the hint otherwise (emulated on AVX512 without BF16), f32 where it does not (AVX2).
    bf16 = cpu_has_native_bf16() or openvino_takes_a_bf16_hint()
    dtype = "bfloat16" if backend is BackendChoice.TORCH or bf16 else "float32"
    with TestClient(create_app(settings, on_fatal=lambda exc: None)) as client:
        wait_ready(client)
        info = client.get("/model").json()
        assert info["backend"] == backend.value
        assert info["dtype"] == dtype
        assert info["device"] == "cpu"
        assert info["compiled"] is False
        assert client.get("/ready").json()["dtype"] == dtype
        assert client.get("/ready").json()["backend"] == backend.value
        metrics = client.get("/metrics").text
        assert f'backend="{backend.value}"' in metrics
        assert f'dtype="{dtype}"' in metrics
        assert 'compiled="false"' in metrics
        response = client.post(
            "/predict", files={"file": ("g.jpg", PHOTOS["grace_hopper"].read_bytes())}
        )
        assert response.status_code == 200


needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device here: runs on a GPU machine"
)


@needs_cuda
def test_cuda_paths_agree_with_cpu_fp32(record_property: Callable[[str, object], None]) -> None:
    x = photos_batch("resnet50")
    reference = reference_logits("resnet50", x)
    for precision in (Precision.FP32, Precision.BF16):
        gpu = runtime("resnet50", device=DeviceChoice.CUDA, precision=precision)
        assert gpu.info.device == "cuda"
        assert gpu.info.backend == "torch"
        logits = gpu.logits(x)
        diff = float(np.abs(logits - reference).max())
        record_property(f"max_logit_difference_cuda_{precision}", diff)
        print(f"cuda {precision} ({gpu.info.device_name}): max logit difference {diff:.4f}")
        for row in range(x.shape[0]):
            top_ref = reference[row].topk(5).indices.tolist()
            top_gpu = logits[row].topk(5).indices.tolist()
            assert top_ref[0] == top_gpu[0]
            assert len(set(top_ref) & set(top_gpu)) >= 4


@needs_cuda
def test_service_on_cuda_end_to_end() -> None:
    settings = make_settings(device="cuda", precision="auto", model_name="resnet50")
    with TestClient(create_app(settings, on_fatal=lambda exc: None)) as client:
        wait_ready(client)
        info = client.get("/model").json()
        assert info["device"] == "cuda"
        assert info["backend"] == "torch"  # auto = torch on a GPU
        assert info["dtype"] == "bfloat16"  # auto picks bf16 on a bf16-capable GPU
        photo_file = {"file": ("g.jpg", PHOTOS["grace_hopper"].read_bytes())}
        response = client.post("/predict", files=photo_file)
        assert response.status_code == 200
        assert 'device="cuda"' in client.get("/metrics").text
