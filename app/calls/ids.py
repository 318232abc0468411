"""Request ids: the caller's own (`X-Request-ID` header, `x-request-id` gRPC metadata) when it
is sane, else a new one."""

from __future__ import annotations

import re
import uuid

# Letters, digits and a few separators, at most 128: an id is logged and echoed, so anything
# else (a key pasted by mistake, control characters, a huge value) is replaced, not repeated.
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def new_request_id() -> str:
    return uuid.uuid4().hex


def accept_request_id(incoming: str | None) -> str:
    """The caller's id when it is sane, else a new one (HTTP header or gRPC metadata)."""
    return incoming if incoming and _REQUEST_ID_OK.match(incoming) else new_request_id()
