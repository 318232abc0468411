"""The request most service-level tests send: one real photograph as a raw JPEG body to
/predict, with the headers a test varies (deadline, API key), from a sync or an async client."""

from __future__ import annotations

import httpx

from helpers.images import PHOTOS

PHOTO = PHOTOS["grace_hopper"].read_bytes()


def _headers(extra: dict[str, str] | None) -> dict[str, str]:
    return {"content-type": "image/jpeg", **(extra or {})}


def post_photo(client: httpx.Client, headers: dict[str, str] | None = None) -> httpx.Response:
    """Also takes a FastAPI TestClient (an httpx.Client)."""
    return client.post("/predict", content=PHOTO, headers=_headers(headers))


async def apost_photo(
    client: httpx.AsyncClient, headers: dict[str, str] | None = None
) -> httpx.Response:
    return await client.post("/predict", content=PHOTO, headers=_headers(headers))
