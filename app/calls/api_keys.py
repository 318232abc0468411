"""Optional API keys, checked the same way on every transport.

Off unless SERVING_API_KEYS is set. Compared in constant time against every configured key
(no early exit, so timing does not reveal which key or how much of it matched). Keys are never
logged: Settings holds them as SecretStr, and the access logs record no headers or metadata."""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from app.errors import UnauthorizedError


def key_matches(candidate: str, keys: Sequence[bytes]) -> bool:
    given = candidate.encode("utf-8", "surrogateescape")
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given, key)
    return matched


def check_api_key(candidate: str | None, keys: Sequence[bytes], *, how_to_send: str) -> None:
    """Nothing when no keys are configured or `candidate` is one of them; else 401
    `unauthorized`, saying how to send a key on this transport (`how_to_send`)."""
    if not keys:
        return
    if not candidate:
        raise UnauthorizedError(f"an API key is required: send {how_to_send}")
    if not key_matches(candidate, keys):
        raise UnauthorizedError("the API key is not valid")
