"""What the OpenAPI document says beyond what FastAPI derives from the routes: the request
bodies the prediction routes read by hand (three content types for /predict, repeated files
for /predict/batch), and the API key schemes documented as optional when no key is set."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from app.images.decode import SUPPORTED_MEDIA_TYPES

from .inputs import JSON, MULTIPART
from .schemas import UrlRequest

_BINARY = {"type": "string", "format": "binary"}

PREDICT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": (
            'One image, as a multipart upload (field `file`), a URL (JSON `{"url": ...}` or '
            "multipart field `url`), or the raw image bytes with an image content type."
        ),
        "content": {
            MULTIPART: {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {**_BINARY, "description": "The image file."},
                        "url": {"type": "string", "maxLength": 4096, "description": "Image URL."},
                    },
                    # Exactly one of the two.
                    "oneOf": [{"required": ["file"]}, {"required": ["url"]}],
                },
                "encoding": {"file": {"contentType": ", ".join(SUPPORTED_MEDIA_TYPES)}},
            },
            JSON: {
                "schema": UrlRequest.model_json_schema(),
                "example": {"url": "https://example.com/cat.jpg"},
            },
            **{media: {"schema": _BINARY} for media in SUPPORTED_MEDIA_TYPES},
        },
    }
}

BATCH_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "Several images as multipart field `files` (repeat the field).",
        "content": {
            MULTIPART: {
                "schema": {
                    "type": "object",
                    "properties": {"files": {"type": "array", "items": _BINARY}},
                    "required": ["files"],
                }
            }
        },
    }
}


def document_auth_as_optional(app: FastAPI) -> None:
    """Without SERVING_API_KEYS the key schemes stay documented, but as optional (`{}` in the
    security list means "no credentials"), so the document tells clients the truth about this
    instance."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    if isinstance(operation, dict) and operation.get("security"):
                        operation["security"] = [{}, *operation["security"]]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
