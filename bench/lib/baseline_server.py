"""The comparison point: a plain FastAPI app as people write it by hand.

One request, one forward pass in fp32 eager mode, decode and `weights.transforms()` inline, the
endpoint a plain `def` (FastAPI runs it in its thread pool). No batching, no fast path.

    python -m bench.lib.baseline_server --port 8100 [--model resnet50]
"""

from __future__ import annotations

import argparse
import io
import sys
from typing import Annotated

import torch
import uvicorn
from fastapi import Depends, FastAPI, Request
from PIL import Image
from torchvision import models


async def read_body(request: Request) -> bytes:
    """The raw body, as a dependency: a sync endpoint cannot await request.body() itself."""
    return await request.body()


def build_app(model_name: str, device: str = "cpu") -> FastAPI:
    weights = models.get_model_weights(model_name).DEFAULT
    torch.manual_seed(0)
    model = models.get_model(model_name, weights=None).eval().to(device)  # random: same FLOPs
    transform = weights.transforms()
    labels = weights.meta["categories"]
    app = FastAPI()

    @app.get("/ready")
    def ready() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/predict")
    def predict(body: Annotated[bytes, Depends(read_body)]) -> dict[str, object]:
        image = Image.open(io.BytesIO(body)).convert("RGB")
        with torch.inference_mode():
            batch = transform(image).unsqueeze(0).to(device)
            probs = torch.softmax(model(batch), dim=1)[0].cpu()
        scores, indices = torch.topk(probs, 5)
        return {
            "predictions": [
                {"label": labels[i], "class_id": i, "score": float(s)}
                for s, i in zip(scores.tolist(), indices.tolist(), strict=True)
            ]
        }

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args(argv)
    app = build_app(args.model, args.device)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
