"""Many identical uploads at once against a server, each outcome counted: "200", "503
memory_busy", "504 deadline_exceeded", or the name of a transport error. What the memory-burst
benchmark records and the memory-budget test judges."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx


async def burst(base_url: str, data: bytes, count: int, timeout_s: float) -> Counter[str]:
    """`count` concurrent POSTs of `data` to /predict, each with X-Request-Timeout `timeout_s`
    (the client waits a minute longer, so a hang shows as a transport error, not a wait)."""
    headers = {"content-type": "application/octet-stream", "X-Request-Timeout": str(timeout_s)}
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout_s + 60) as client:

        async def one() -> str:
            try:
                response = await client.post("/predict", content=data, headers=headers)
            except httpx.TransportError as exc:
                return type(exc).__name__
            code = response.json().get("error", {}).get("code") if response.status_code else None
            return f"{response.status_code}" + (f" {code}" if code else "")

        return Counter(await asyncio.gather(*(one() for _ in range(count))))
