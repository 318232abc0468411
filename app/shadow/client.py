"""One shadow call: the image's bytes as a multipart upload to the other version's /predict
(`?top_k=1`, `X-Shadow: 1`, the request's `X-Request-ID`), its top-1 class and the
`X-Model-Version` it answered with.

One httpx connection pool for the process (keep-alive, at most SERVING_SHADOW_CONCURRENCY
connections), no proxies from the environment, no redirects followed; the whole call, connect
to last byte, within SERVING_SHADOW_TIMEOUT_S; an answer larger than any prediction is cut off.
Every failure is a `ShadowCallError`.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import httpx

from app.shadow.policy import SHADOW_HEADER, ShadowPolicy

# A top_k=1 answer is well under 2 KiB; anything beyond this is not one.
MAX_ANSWER_BYTES = 64 * 1024


class ShadowCallError(Exception):
    """The copy was not answered with a prediction: refused, failed, timed out, or not one."""


@dataclass(frozen=True)
class ShadowAnswer:
    top1: int  # class id
    version: str | None  # its X-Model-Version header


class ShadowClient:
    def __init__(
        self,
        policy: ShadowPolicy,
        *,
        api_key: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """`api_key`: presented as `X-API-Key` (both versions of a release share
        SERVING_API_KEYS), which leaves `Authorization` to credentials in the URL (basic auth,
        for a proxy in between); None: none. `transport`: httpx's own (tests: a mock)."""
        self.policy = policy
        self._auth = {"X-API-Key": api_key} if api_key else {}
        pool = policy.concurrency
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(policy.timeout_s),
            limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
            trust_env=False,
            follow_redirects=False,
            transport=transport,
        )

    async def predict(self, data: bytes, request_id: str) -> ShadowAnswer:
        headers = {SHADOW_HEADER: "1", "X-Request-ID": request_id, **self._auth}
        files = {"file": ("image", data, "application/octet-stream")}
        try:
            async with asyncio.timeout(self.policy.timeout_s):
                async with self._client.stream(
                    "POST", self.policy.predict_url, params={"top_k": "1"}, files=files,
                    headers=headers,
                ) as response:  # fmt: skip
                    body = await _read_capped(response)
        except TimeoutError:
            raise ShadowCallError(f"no answer within {self.policy.timeout_s:g} s") from None
        except httpx.HTTPError as exc:
            raise ShadowCallError(f"{type(exc).__name__}: {exc}") from None
        version = response.headers.get("x-model-version")
        if response.status_code != 200:
            raise ShadowCallError(f"answered {response.status_code}")
        try:
            top1 = json.loads(body)["predictions"][0]["class_id"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise ShadowCallError("the answer is not a prediction") from None
        if not isinstance(top1, int) or isinstance(top1, bool):
            raise ShadowCallError("the answer's class_id is not an integer")
        return ShadowAnswer(top1, version)

    async def aclose(self) -> None:
        await self._client.aclose()


async def _read_capped(response: httpx.Response) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise ShadowCallError(f"the answer is larger than {MAX_ANSWER_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
