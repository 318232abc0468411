"""The Open Inference Protocol over gRPC, through the release's Service (its port `grpc`, as the
chart exposes it), driven by Triton's own client (tritonclient.grpc from PyPI): health, model
metadata, and a real photograph classified with class_count=5, consistent with /predict over
HTTP. Then API keys from the chart's Secret: a call without one is UNAUTHENTICATED on gRPC
(401 on HTTP), the health calls stay open, and the key is accepted as either metadata."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from e2e.kube import Cluster, wait_until

CLASS_COUNT = 5
# Generous per call: the Service may route a call to a pod that is busy with a batch.
CALL_TIMEOUT_S = 30.0


def _image_input(photo: bytes) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([photo], dtype=np.object_))
    return tensor


def _classify(
    client: grpcclient.InferenceServerClient,
    model: str,
    photo: bytes,
    headers: dict[str, str] | None = None,
) -> list[tuple[float, int, str]]:
    """The top CLASS_COUNT of PHOTO as (score, index, label), in the order the server sent."""
    result = client.infer(
        model,
        [_image_input(photo)],
        outputs=[grpcclient.InferRequestedOutput("scores", class_count=CLASS_COUNT)],
        client_timeout=CALL_TIMEOUT_S,
        headers=headers,
    )
    strings = result.as_numpy("scores")
    assert strings.shape == (1, CLASS_COUNT), strings.shape
    parsed = []
    for item in strings[0]:
        score, index, label = item.decode().split(":", 2)
        parsed.append((float(score), int(index), label))
    return parsed


def _status(call: Callable[[], object]) -> str:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return str(caught.value.status())


def test_grpc_through_the_service_classifies_a_real_photo(
    release_ready: Cluster,
    grpc_target: str,
    base_url: str,
    photo: bytes,
    figures: dict[str, Any],
) -> None:
    cluster = release_ready
    config = cluster.config()
    model = config["SERVING_MODEL_NAME"]
    # The Service port is the one the app listens on (the chart derives both from the setting).
    port = cluster.service_port("grpc")
    assert port["port"] == int(config["SERVING_GRPC_PORT"]), port
    assert port["targetPort"] == "grpc", port

    with grpcclient.InferenceServerClient(grpc_target) as client:
        assert client.is_server_live(client_timeout=CALL_TIMEOUT_S)
        assert client.is_server_ready(client_timeout=CALL_TIMEOUT_S)
        assert client.is_model_ready(model, client_timeout=CALL_TIMEOUT_S)
        meta = client.get_model_metadata(model, as_json=True, client_timeout=CALL_TIMEOUT_S)
        assert meta["name"] == model
        inputs = {t["name"]: (t["datatype"], t["shape"]) for t in meta["inputs"]}
        assert inputs["image"] == ("BYTES", ["-1"]), inputs
        assert inputs["tensor"][0] == "FP32", inputs
        outputs = {t["name"]: (t["datatype"], t["shape"]) for t in meta["outputs"]}
        assert outputs["scores"] == ("FP32", ["-1", "1000"]), outputs

        started = time.monotonic()
        top = _classify(client, model, photo)
        grpc_ms = (time.monotonic() - started) * 1000

    scores = [score for score, _, _ in top]
    assert scores == sorted(scores, reverse=True), top
    assert all(0.0 <= s <= 1.0 for s in scores), top
    assert len({index for _, index, _ in top}) == CLASS_COUNT, top
    assert all(0 <= index < 1000 and label for _, index, label in top), top

    # The same photograph through /predict (HTTP, same Service): the same model answers, so a
    # class both lists name has the same label and score, and each top-1 is in the other's top 5.
    response = httpx.post(
        f"{base_url}/predict",
        files={"file": ("grace_hopper.jpg", photo, "image/jpeg")},
        params={"top_k": CLASS_COUNT},
        timeout=CALL_TIMEOUT_S,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    http_top = {p["class_id"]: (p["score"], p["label"]) for p in body["predictions"]}
    grpc_top = {index: (score, label) for score, index, label in top}
    shared = set(http_top) & set(grpc_top)
    assert top[0][1] in http_top, (top, body["predictions"])
    assert body["predictions"][0]["class_id"] in grpc_top, (top, body["predictions"])
    for index in shared:
        assert grpc_top[index][1] == http_top[index][1], index
        assert grpc_top[index][0] == pytest.approx(http_top[index][0], rel=1e-2, abs=1e-4)
    if body["weights"] != "random":
        # The real ImageNet weights (the workflow's image): the golden answer.
        assert "military uniform" in [label for _, _, label in top], top
        assert top[0][1] == body["predictions"][0]["class_id"], (top, body["predictions"])

    figures["grpc"] = {
        "target": grpc_target,
        "service_port": port["port"],
        "app_protocol": port.get("appProtocol"),
        "model": model,
        "weights": body["weights"],
        "top5": [label for _, _, label in top],
        "classes_shared_with_predict": len(shared),
        "infer_ms": round(grpc_ms, 1),
    }


@pytest.mark.timeout(1200)
def test_grpc_api_keys_from_the_charts_secret(
    release_ready: Cluster,
    grpc_target: str,
    base_url: str,
    photo: bytes,
    figures: dict[str, Any],
) -> None:
    cluster = release_ready
    model = cluster.config()["SERVING_MODEL_NAME"]
    replicas = int(cluster.deployment()["spec"]["replicas"])
    previous = cluster.helm_revision()
    key = secrets.token_hex(24)
    started = time.monotonic()
    try:
        # apiKeys.keys: the chart makes the Secret, SERVING_API_KEYS comes from it, pods roll.
        cluster.upgrade(f"apiKeys.keys[0]={key}")
        cluster.wait_rolled_out()
        wait_until(
            f"{replicas} ready pods of the new revision, none terminating",
            cluster.settled,
            300,
        )
        keys_on_s = time.monotonic() - started
        with grpcclient.InferenceServerClient(grpc_target) as client:
            # Health needs no key, as the HTTP probes need none.
            assert client.is_server_live(client_timeout=CALL_TIMEOUT_S)
            assert client.is_model_ready(model, client_timeout=CALL_TIMEOUT_S)
            for wrong in (None, {"x-api-key": "not-the-key-" + "0" * 16}):
                keyless = partial(_classify, client, model, photo, wrong)
                assert _status(keyless) == "StatusCode.UNAUTHENTICATED", wrong
            assert (
                _status(lambda: client.get_model_metadata(model, client_timeout=CALL_TIMEOUT_S))
                == "StatusCode.UNAUTHENTICATED"
            )
            for headers in ({"x-api-key": key}, {"authorization": f"Bearer {key}"}):
                assert len(_classify(client, model, photo, headers)) == CLASS_COUNT, headers
        # HTTP takes the same keys from the same Secret.
        files = {"file": ("grace_hopper.jpg", photo, "image/jpeg")}
        assert httpx.get(f"{base_url}/ready", timeout=CALL_TIMEOUT_S).status_code == 200
        refused = httpx.post(f"{base_url}/predict", files=files, timeout=CALL_TIMEOUT_S)
        assert refused.status_code == 401, refused.text
        keyed = httpx.post(
            f"{base_url}/predict",
            files=files,
            headers={"X-API-Key": key},
            timeout=CALL_TIMEOUT_S,
        )
        assert keyed.status_code == 200, keyed.text
    finally:
        # Back to the revision without keys, whatever failed above: later runs expect none.
        cluster.helm_(
            "rollback", cluster.release, str(previous), "--wait", "--timeout", "10m", timeout=660
        )
        cluster.wait_rolled_out()
        # The keyed pods gone too: until then they answer the next test with 401s.
        wait_until("the pods without keys alone", cluster.settled, 300)
    figures["grpc_api_keys"] = {
        "keyless": "UNAUTHENTICATED",
        "accepted_as": ["x-api-key", "authorization: Bearer"],
        "keys_on_seconds": round(keys_on_s, 1),
    }
