"""The rules Settings enforces beyond each field's type and range: list parsing, CIDRs, API
key shape, and the combinations of settings that cannot run together. Messages name the
variable and the rule, never a secret's value (app/settings_errors.py)."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from pydantic import SecretStr

from app.runtime_options import BackendChoice, DeviceChoice, Precision

if TYPE_CHECKING:
    from app.config import Settings


def split_commas(value: object) -> object:
    """A comma-separated environment value as a list (blank items dropped)."""
    if isinstance(value, str):
        parts = [part.strip() for part in value.split(",") if part.strip()]
        if value.strip() and not parts:
            # Set, but to nothing: for API keys that would silently mean "no auth".
            raise ValueError("holds only commas or spaces; leave it empty or list values")
        return parts
    return value


def networks(value: list[str]) -> list[str]:
    for cidr in value:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError as exc:
            raise ValueError(f"not a CIDR network: {cidr!r}") from exc
    return value


def api_keys(value: list[SecretStr]) -> list[SecretStr]:
    # Messages name the key's position, never its characters (nor its length).
    for number, key in enumerate(value, start=1):
        secret = key.get_secret_value()
        if len(secret) < 16:
            raise ValueError(f"key {number} of {len(value)} is shorter than 16 characters")
        if not all("!" <= char <= "~" for char in secret):
            raise ValueError(
                f"key {number} of {len(value)} has a space, control or non-ASCII character "
                "(HTTP headers cannot carry it reliably)"
            )
    return value


def ports_and_timeouts(s: Settings) -> None:
    ports = {"SERVING_PORT": s.port, "SERVING_METRICS_PORT": s.metrics_port,
             "SERVING_GRPC_PORT": s.grpc_port}  # fmt: skip
    taken: dict[int, str] = {}
    for name, port in ports.items():
        if port and port in taken:
            raise ValueError(f"{name} must differ from {taken[port]} (or be 0)")
        taken.setdefault(port, name)
    if s.request_timeout_s > s.max_request_timeout_s:
        raise ValueError("SERVING_REQUEST_TIMEOUT_S must not exceed SERVING_MAX_REQUEST_TIMEOUT_S")


def engine_choices(s: Settings) -> None:
    openvino = s.backend is BackendChoice.OPENVINO
    if openvino and s.device is DeviceChoice.CUDA:
        raise ValueError("SERVING_BACKEND=openvino runs on the CPU: not with SERVING_DEVICE=cuda")
    if openvino and s.compile:
        raise ValueError("SERVING_COMPILE=true is torch.compile: not with SERVING_BACKEND=openvino")
    if s.precision is Precision.INT8 and (
        s.backend is BackendChoice.TORCH or s.device is DeviceChoice.CUDA or s.compile
    ):
        raise ValueError(
            "SERVING_PRECISION=int8 needs the OpenVINO backend on the CPU (SERVING_BACKEND="
            "auto or openvino, SERVING_DEVICE=cpu or auto, SERVING_COMPILE=false)"
        )
