"""TorchServe handler for the benchmark peer: ResNet-50, fp32 eager, top-5.

What a TorchServe user writes for this model: decode with Pillow, the preprocessing of
torchvision's ResNet50_Weights.IMAGENET1K_V2 (resize the shorter side to 232, centre crop 224,
normalise; TorchServe's stock image_classifier resizes to 256, so it would not compute the same
thing as the project and the baseline), one forward pass per batch TorchServe hands over, and
the top 5 classes. A module-level `handle(data, context)` entry point (TorchServe's function
handler), so this file imports nothing from TorchServe and the tests can check it without it.
"""

from __future__ import annotations

import io
import os
from typing import Any

import torch
from PIL import Image
from torchvision import models, transforms

TOP_K = 5
RESIZE = 232  # ResNet50_Weights.IMAGENET1K_V2's resize_size
CROP = 224
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def build_transform() -> transforms.Compose:
    return transforms.Compose(
        [
            transforms.Resize(
                RESIZE, interpolation=transforms.InterpolationMode.BILINEAR, antialias=True
            ),
            transforms.CenterCrop(CROP),
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ]
    )


def decode(body: bytes | bytearray) -> Image.Image:
    return Image.open(io.BytesIO(body)).convert("RGB")


def request_body(request: dict[str, Any]) -> bytes | bytearray:
    """TorchServe puts a raw body under "body" (or "data" for form fields)."""
    body = request.get("body")
    if body is None:
        body = request.get("data")
    if not isinstance(body, (bytes, bytearray)):
        raise ValueError("expected raw image bytes in the request body")
    return body


def top_k(logits: torch.Tensor, labels: list[str], k: int = TOP_K) -> list[list[dict[str, Any]]]:
    probs = torch.softmax(logits.float(), dim=1)
    scores, indices = torch.topk(probs, k, dim=1)
    return [
        [
            {"label": labels[i], "class_id": i, "score": float(s)}
            for s, i in zip(row_scores.tolist(), row_indices.tolist(), strict=True)
        ]
        for row_scores, row_indices in zip(scores, indices, strict=True)
    ]


class ResNetService:
    def __init__(self) -> None:
        self.model: torch.nn.Module | None = None
        self.transform = build_transform()
        self.labels: list[str] = list(models.ResNet50_Weights.IMAGENET1K_V2.meta["categories"])

    def initialize(self, model_dir: str, serialized_file: str) -> None:
        model = models.resnet50(weights=None)
        state = torch.load(os.path.join(model_dir, serialized_file), map_location="cpu")
        model.load_state_dict(state)
        self.model = model.eval()
        # Threads come from OMP_NUM_THREADS in the worker's environment (the benchmark sets it;
        # TorchServe itself only does so for torchrun models): printed to the model log.
        print(f"resnet50 loaded, torch threads: {torch.get_num_threads()}", flush=True)

    def predict(self, requests: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        assert self.model is not None, "initialize first"
        batch = torch.stack([self.transform(decode(request_body(r))) for r in requests])
        with torch.inference_mode():
            logits = self.model(batch)
        return top_k(logits, self.labels)


_service = ResNetService()


def handle(data: list[dict[str, Any]] | None, context: Any) -> list[Any] | None:
    """TorchServe's entry point: called once with data=None to initialize, then per batch."""
    if _service.model is None:
        _service.initialize(
            context.system_properties["model_dir"],
            context.manifest["model"]["serializedFile"],
        )
    if data is None:
        return None
    return _service.predict(data)
