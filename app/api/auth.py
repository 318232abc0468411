"""Optional API keys: `Authorization: Bearer <key>` or `X-API-Key: <key>`.

Off unless SERVING_API_KEYS is set. Compared in constant time against every configured key
(no early exit, so timing does not reveal which key or how much of it matched). Keys are never
logged: Settings holds them as SecretStr, and the access log records no headers."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from app.errors import UnauthorizedError

bearer_scheme = HTTPBearer(
    auto_error=False,
    description="`Authorization: Bearer <key>`; needed only when SERVING_API_KEYS is set.",
)
header_scheme = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="`X-API-Key: <key>`; needed only when SERVING_API_KEYS is set.",
)


def key_matches(candidate: str, keys: list[bytes]) -> bool:
    given = candidate.encode("utf-8", "surrogateescape")
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given, key)
    return matched


async def require_api_key(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
    header_key: Annotated[str | None, Security(header_scheme)],
) -> None:
    keys: list[bytes] = request.app.state.api_keys
    if not keys:
        return
    candidate = bearer.credentials if bearer is not None else header_key
    if not candidate:
        raise UnauthorizedError(
            "an API key is required: send `Authorization: Bearer <key>` or `X-API-Key: <key>`"
        )
    if not key_matches(candidate, keys):
        raise UnauthorizedError("the API key is not valid")
