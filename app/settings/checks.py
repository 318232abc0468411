"""The rules Settings enforces beyond each field's type and range: list parsing, CIDRs, API
key shape, and the combinations of settings that cannot run together. Messages name the
variable and the rule, never a secret's value (app/settings/errors.py)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping

from pydantic import SecretStr

from app.cache.redis_url import parse_redis_url
from app.model.options import BackendChoice, DeviceChoice, Precision
from app.shadow.policy import parse_target

# A torchvision model's name, as far as can be told without torchvision.
MODEL_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
# SERVING_MODEL_VERSION: a label that travels in a header, a metric label and the protocol's
# version path segment, so it stays short and plain.
MODEL_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")


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


def model_version(value: str) -> str:
    label = value.strip()
    if not MODEL_VERSION.fullmatch(label):
        raise ValueError(
            "must be 1-32 characters: letters, digits, '.', '_' or '-', starting with a letter "
            "or a digit (e.g. v1, 2024-06-01, canary)"
        )
    return label


def shadow_url(value: str) -> str:
    """SERVING_SHADOW_URL: empty (off) or the other version's base URL (app/shadow/policy.py)."""
    return parse_target(value) if value.strip() else ""


def redis_url(value: str) -> None:
    """SERVING_CACHE_REDIS_URL's grammar; the message never quotes the URL (a password)."""
    parse_redis_url(value)


# The combination rules take the values they compare, not Settings: this module is imported by
# app/settings/config.py and must not import it back.


def ports_and_timeouts(
    ports: Mapping[str, int], request_timeout_s: float, max_request_timeout_s: float
) -> None:
    """`ports` maps each variable to its port; 0 means "off" and may repeat."""
    taken: dict[int, str] = {}
    for name, port in ports.items():
        if port and port in taken:
            raise ValueError(f"{name} must differ from {taken[port]} (or be 0)")
        taken.setdefault(port, name)
    if request_timeout_s > max_request_timeout_s:
        raise ValueError("SERVING_REQUEST_TIMEOUT_S must not exceed SERVING_MAX_REQUEST_TIMEOUT_S")


def engine_choices(
    backend: BackendChoice, device: DeviceChoice, precision: Precision, compile_model: bool
) -> None:
    openvino = backend is BackendChoice.OPENVINO
    if openvino and device is DeviceChoice.CUDA:
        raise ValueError("SERVING_BACKEND=openvino runs on the CPU: not with SERVING_DEVICE=cuda")
    if openvino and compile_model:
        raise ValueError("SERVING_COMPILE=true is torch.compile: not with SERVING_BACKEND=openvino")
    if precision is Precision.INT8 and (
        backend is BackendChoice.TORCH or device is DeviceChoice.CUDA or compile_model
    ):
        raise ValueError(
            "SERVING_PRECISION=int8 needs the OpenVINO backend on the CPU (SERVING_BACKEND="
            "auto or openvino, SERVING_DEVICE=cpu or auto, SERVING_COMPILE=false)"
        )


def built_model(
    model_dir: str, backend: BackendChoice, device: DeviceChoice, compile_model: bool
) -> None:
    """A build-time IR runs on OpenVINO, on the CPU; torch has nothing to run from it."""
    if not model_dir:
        return
    if backend is BackendChoice.TORCH or device is DeviceChoice.CUDA or compile_model:
        raise ValueError(
            "SERVING_MODEL_DIR (a build-time OpenVINO IR) runs on the CPU with OpenVINO: not "
            "with SERVING_BACKEND=torch, SERVING_DEVICE=cuda or SERVING_COMPILE=true (the GPU "
            "image leaves SERVING_MODEL_DIR empty)"
        )
