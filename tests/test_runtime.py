"""The model runtime's paths: precision and device selection, the bf16 fast path's accuracy
guard against fp32, the compiled path, and the runtime as the service reports it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from fastapi.testclient import TestClient

from app.main import create_app
from app.preprocess import Preprocessor
from app.runtime import (
    ModelRuntime,
    cpu_has_native_bf16,
    select_device,
    select_precision,
)
from app.runtime_options import DeviceChoice, Precision
from app.weights import load_model, resolve_weights
from conftest import make_settings, wait_ready
from helpers.images import PHOTOS, photo


def photos_batch(model_name: str) -> torch.Tensor:
    source = resolve_weights(model_name, "random", allow_download=False)
    pre = Preprocessor.from_transforms(source.meta_weights.transforms())
    return torch.stack([pre(photo(name)) for name in sorted(PHOTOS)])


def runtime(model_name: str, **kwargs: object) -> ModelRuntime:
    source = resolve_weights(model_name, "random", allow_download=False)
    return ModelRuntime(load_model(source, seed=0), num_threads=2, **kwargs)  # type: ignore[arg-type]


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
    cpu = torch.device("cpu")
    assert select_precision(Precision.FP32, cpu) is Precision.FP32
    assert select_precision(Precision.BF16, cpu) is Precision.BF16
    auto = select_precision(Precision.AUTO, cpu)
    assert auto is (Precision.BF16 if cpu_has_native_bf16() else Precision.FP32)


def test_cuda_requested_without_a_gpu_fails_clearly() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(RuntimeError, match="SERVING_DEVICE=cuda"):
        select_device(DeviceChoice.CUDA)
    assert select_device(DeviceChoice.AUTO).type == "cpu"


def test_fp32_path_equals_the_plain_model() -> None:
    """Folding batch norm and channels_last change nothing beyond float rounding."""
    x = photos_batch("resnet18")
    fast = runtime("resnet18", precision=Precision.FP32)
    plain = load_model(resolve_weights("resnet18", "random", allow_download=False), seed=0).model
    with torch.inference_mode():
        reference = plain(x)
    assert (fast.logits(x) - reference).abs().max().item() < 1e-3


@pytest.mark.parametrize(
    "model_name", ["resnet18", pytest.param("resnet50", marks=pytest.mark.slow)]
)
def test_bf16_keeps_top1_and_four_of_top5(
    model_name: str, record_property: Callable[[str, object], None]
) -> None:
    """The accuracy guard for the fast path, on real photographs. With random weights the
    classes are less separated than with trained ones, so this is the weaker check; the GitHub
    workflow repeats it with the real ImageNet weights."""
    x = photos_batch(model_name)
    fp32 = runtime(model_name, precision=Precision.FP32).logits(x)
    bf16 = runtime(model_name, precision=Precision.BF16).logits(x)
    max_diff = (fp32 - bf16).abs().max().item()
    record_property("max_logit_difference", max_diff)
    print(f"{model_name}: max |logit fp32 - logit bf16| = {max_diff:.4f}")
    for row in range(x.shape[0]):
        top_fp32 = fp32[row].topk(5).indices.tolist()
        top_bf16 = bf16[row].topk(5).indices.tolist()
        assert top_fp32[0] == top_bf16[0], f"top-1 changed for photo {row}"
        assert len(set(top_fp32) & set(top_bf16)) >= 4, f"top-5 drifted for photo {row}"


@pytest.mark.slow
def test_compiled_path_matches_eager_for_every_batch_size() -> None:
    compiled = runtime("resnet18", precision=Precision.FP32, compile_model=True)
    eager = runtime("resnet18", precision=Precision.FP32)
    assert compiled.info.compiled
    compiled.warm_up(range(1, 5), 224)
    x = photos_batch("resnet18")
    for size in (1, 3, 4):
        diff = (compiled.logits(x[:size]) - eager.logits(x[:size])).abs().max().item()
        assert diff < 1e-3, (size, diff)


def test_service_reports_the_path_it_runs() -> None:
    settings = make_settings(precision="bf16", max_batch_size=2)
    with TestClient(create_app(settings, on_fatal=lambda exc: None)) as client:
        wait_ready(client)
        info = client.get("/model").json()
        assert info["dtype"] == "bfloat16"
        assert info["device"] == "cpu"
        assert info["compiled"] is False
        assert client.get("/ready").json()["dtype"] == "bfloat16"
        metrics = client.get("/metrics").text
        assert 'dtype="bfloat16"' in metrics
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
    reference = runtime("resnet50", precision=Precision.FP32).logits(x)
    for precision in (Precision.FP32, Precision.BF16):
        gpu = runtime("resnet50", device=DeviceChoice.CUDA, precision=precision)
        assert gpu.info.device == "cuda"
        logits = gpu.logits(x).cpu()
        diff = (logits - reference).abs().max().item()
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
        assert info["dtype"] == "bfloat16"  # auto picks bf16 on a bf16-capable GPU
        photo_file = {"file": ("g.jpg", PHOTOS["grace_hopper"].read_bytes())}
        response = client.post("/predict", files=photo_file)
        assert response.status_code == 200
        assert 'device="cuda"' in client.get("/metrics").text
