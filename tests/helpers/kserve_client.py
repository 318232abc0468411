"""KServe's Python SDK REST client against a protocol server, in a process of its own.

Run as `python tests/helpers/kserve_client.py BASE_URL PIXELS.npy IMAGE...`: prints one JSON
object with
what the client saw. A separate process because kserve and tritonclient.grpc both register the
`inference.*` protobuf names in protobuf's default pool, and a process can hold only one of
them (the gRPC tests import tritonclient.grpc).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput


async def main(base_url: str, files: list[bytes], pixels: np.ndarray) -> dict[str, Any]:
    client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=60))
    seen: dict[str, Any] = {
        "live": await client.is_server_live(base_url),
        "ready": await client.is_server_ready(base_url),
        "model_ready": await client.is_model_ready(base_url, "fake"),
        "other_ready": await client.is_model_ready(base_url, "other"),
    }

    # Image files: BYTES as binary data after the JSON header, top-2 classification.
    images = InferInput("image", [len(files)], "BYTES")
    images.set_data_from_numpy(np.array(files, dtype=np.object_), binary_data=True)
    request = InferRequest(
        model_name="fake",
        infer_inputs=[images],
        request_outputs=[RequestedOutput("scores", parameters={"classification": 2})],
    )
    response = await client.infer(base_url, request, model_name="fake")
    output = response.outputs[0]
    seen["classes"] = {
        "shape": output.shape,
        "datatype": output.datatype,
        "data": [s.decode() if isinstance(s, bytes) else s for s in output.as_numpy().ravel()],
    }

    # Preprocessed pixels: FP32 as JSON numbers (an ndarray input goes out as JSON).
    tensor = InferInput("tensor", list(pixels.shape), "FP32", data=pixels)
    response = await client.infer(
        base_url, InferRequest(model_name="fake", infer_inputs=[tensor]), model_name="fake"
    )
    seen["scores"] = response.outputs[0].as_numpy().tolist()
    seen["model_name"] = response.model_name

    try:
        await client.infer(
            base_url, InferRequest(model_name="fake", infer_inputs=[tensor]), model_name="other"
        )
    except Exception as exc:  # httpx.HTTPStatusError, with the server's "error" text
        seen["error"] = {"type": type(exc).__name__, "text": str(exc)}
    await client.close()
    return seen


if __name__ == "__main__":
    base, pixels_path, *paths = sys.argv[1:]
    blobs = [Path(p).read_bytes() for p in paths]
    print(json.dumps(asyncio.run(main(base, blobs, np.load(pixels_path)))))
