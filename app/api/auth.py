"""Optional API keys on HTTP: `Authorization: Bearer <key>` or `X-API-Key: <key>`, checked by
app/calls/api_keys.py's rule (off unless SERVING_API_KEYS is set, constant-time comparison)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from app.calls.api_keys import check_api_key

bearer_scheme = HTTPBearer(
    auto_error=False,
    description="`Authorization: Bearer <key>`; needed only when SERVING_API_KEYS is set.",
)
header_scheme = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="`X-API-Key: <key>`; needed only when SERVING_API_KEYS is set.",
)


async def require_api_key(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
    header_key: Annotated[str | None, Security(header_scheme)],
) -> None:
    keys: list[bytes] = request.app.state.api_keys
    candidate = bearer.credentials if bearer is not None else header_key
    check_api_key(
        candidate, keys, how_to_send="`Authorization: Bearer <key>` or `X-API-Key: <key>`"
    )
