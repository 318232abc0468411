"""Settings: every knob of the service, read from `SERVING_*` environment variables.

Nothing here runs at import time: callers build `Settings()` once (in `python -m app` or a
test) and pass it to `create_app(settings)`. The field list is the single source of the
README's settings table and of the Helm chart's ConfigMap (a test keeps the three equal).
"""

from __future__ import annotations

import re
from enum import Enum, StrEnum
from typing import Annotated

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.model.options import BackendChoice, DeviceChoice, Precision
from app.settings import checks
from app.settings.errors import describe_validation_error as describe_settings_error

ENV_PREFIX = "SERVING_"

# Architectures offered by name. Any torchvision classification model works; these are the ones
# the docs promise and tests cover. Others are accepted if torchvision knows them.
DOCUMENTED_MODELS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


class LogFormat(StrEnum):
    JSON = "json"
    TEXT = "text"


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


class Settings(BaseSettings):
    """All settings of one serving process. Field docs are user-facing (README table)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        case_sensitive=False,
        extra="ignore",
        frozen=True,
        use_enum_values=False,
        # `model_` fields are ours, not pydantic's namespace.
        protected_namespaces=(),
    )

    # --- server -----------------------------------------------------------------------------
    host: str = Field("0.0.0.0", description="Address the HTTP server binds to.")
    port: int = Field(8000, ge=1, le=65535, description="Port the HTTP server listens on.")
    log_level: LogLevel = Field(LogLevel.INFO, description="debug, info, warning, error.")
    log_format: LogFormat = Field(
        LogFormat.JSON, description="`json` (one object per line) or `text`."
    )

    # --- model ------------------------------------------------------------------------------
    model_name: str = Field(
        "resnet50",
        description="torchvision classification architecture: resnet18/34/50/101/152, ...",
    )
    model_version: str = Field(
        "v1",
        description=(
            "Label of the version this process serves (1-32 characters: letters, digits, `.`, "
            "`_`, `-`): in every answer (`model_version`, the `X-Model-Version` header, gRPC "
            "metadata `x-model-version`), the Open Inference Protocol's model version, and a "
            "`model_version` label on every metric. Stable and canary of an A/B test differ here."
        ),
    )
    oip_model_name: str = Field(
        "",
        description=(
            "Name the Open Inference Protocol serves the model under (`/v2/models/<name>`, "
            "gRPC `model_name`); empty = SERVING_MODEL_NAME. The chart gives an A/B canary the "
            "stable's, so that a client naming the model reaches either version."
        ),
    )
    model_weights: str = Field(
        "DEFAULT",
        description=(
            "`DEFAULT` (torchvision's default weights), a weights name such as "
            "`IMAGENET1K_V1`, a path to a `.pth` state dict, or `random` (tests/smoke only)."
        ),
    )
    model_dir: str = Field(
        "",
        description=(
            "Directory of the model compiled when the image was built (OpenVINO IR and its "
            "`manifest.json`; the CPU image sets `/opt/model`): served without torch, and start-up "
            "stops if it is not the model that SERVING_MODEL_NAME, SERVING_MODEL_WEIGHTS and "
            "SERVING_PRECISION ask for. Empty = convert torchvision's model at start-up (needs "
            "torch)."
        ),
    )
    allow_weights_download: bool = Field(
        True,
        description="Let torchvision download named weights that are not in torch's cache.",
    )
    random_seed: int = Field(0, description="Seed for `random` weights (reproducible tests).")
    num_threads: int = Field(
        0,
        ge=0,
        le=256,
        description=(
            "Threads of the forward pass (OpenVINO's INFERENCE_NUM_THREADS, or torch's intra-op "
            "threads); 0 = the CPUs this process may use (cgroup-aware); 1 on a GPU."
        ),
    )
    model_thread_niceness: int = Field(
        10,
        ge=0,
        le=19,
        description=(
            "How much lower the model's threads run than the event loop and decoders (Linux "
            "nice): a busy model then never starves HTTP. 0 = same priority."
        ),
    )

    device: DeviceChoice = Field(
        DeviceChoice.AUTO,
        description="`auto` (a CUDA GPU if torch sees one, else CPU), `cpu` or `cuda`.",
    )
    precision: Precision = Field(
        Precision.AUTO,
        description=(
            "`auto` (bf16 on CPUs with AMX or AVX512-BF16 and on bf16-capable GPUs, else fp32), "
            "`fp32`, `bf16`, or `int8` (OpenVINO only: quantized at start-up with NNCF, "
            "calibrated on photographs shipped with the image; needs the `int8` extra)."
        ),
    )
    compile: bool = Field(
        False,
        description=(
            "torch.compile the model (needs a C++ compiler on CPU); compiled and warmed for "
            "every batch size before /ready turns 200."
        ),
    )

    # --- inference backend (issue 11) --------------------------------------------------------
    backend: BackendChoice = Field(
        BackendChoice.AUTO,
        description=(
            "`auto` (OpenVINO on a CPU; torch on a GPU or with SERVING_COMPILE=true, and torch "
            "when OpenVINO cannot load), `openvino` (CPU only) or `torch`."
        ),
    )

    # --- request limits ---------------------------------------------------------------------
    top_k: int = Field(5, ge=1, le=20, description="Default number of predictions returned.")
    max_upload_bytes: int = Field(
        10 * 1024 * 1024,
        ge=1024,
        description="Largest accepted image, in bytes (uploads and URL downloads).",
    )
    max_image_pixels: int = Field(
        50_000_000,
        ge=1,
        description="Largest accepted image in pixels (width x height): stops decompression bombs.",
    )
    max_pixels_in_flight: int = Field(
        0,
        ge=0,
        description=(
            "Memory budget for images being decoded, in RGB pixels (4 bytes each). Each image "
            "reserves its decoder's measured peak from its header (a PNG about 1.1x its pixels, "
            "a WebP 4-5x) until its tensor exists; one that does not fit waits, then gets 503 "
            "`memory_busy`. 0 = half of what the loaded model leaves free under the container's "
            "memory limit, or 384 MiB without a limit."
        ),
    )
    max_body_bytes_in_flight: int = Field(
        0,
        ge=0,
        description=(
            "Memory budget for request bodies being read and parsed, in bytes. Each request "
            "reserves its Content-Length (the route's cap when it sends none) times what its "
            "route holds at the peak per body byte (3 for /predict and /predict/batch, 5 for "
            "the protocol's REST bodies, 7 for a gRPC message; measured by "
            "bench/experiments/body_memory.py) "
            "before its body is read, until it is answered; "
            "one that does not fit waits, then gets 503 `memory_busy`, and one larger than the "
            "whole budget waits for it to be empty. 0 = a quarter of what the loaded model "
            "leaves free under the container's memory limit, or 128 MiB without a limit."
        ),
    )
    max_batch_files: int = Field(
        16, ge=1, le=256, description="Most images in one `POST /predict/batch` request."
    )

    # --- batching ---------------------------------------------------------------------------
    max_batch_size: int = Field(
        8, ge=1, le=256, description="Most images the model runs in one forward pass."
    )
    max_batch_delay_ms: float = Field(
        2.0,
        ge=0,
        le=1000,
        description="Longest a batch waits to fill once requests are queued (never when idle).",
    )
    max_queue_size: int = Field(
        64,
        ge=1,
        description="Images waiting for the model (decoding or queued) before new ones get 503.",
    )
    decode_workers: int = Field(
        2, ge=1, le=64, description="Threads that decode and preprocess images."
    )

    # --- overload, deadlines, shutdown -----------------------------------------------------
    request_timeout_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description=(
            "Default deadline of a prediction request; a request that cannot be answered in "
            "time is refused at once (503) or dropped from the queue (504)."
        ),
    )
    max_request_timeout_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="Largest deadline a client may ask for with the X-Request-Timeout header.",
    )
    graceful_timeout_s: float = Field(
        20.0,
        ge=0,
        le=3600,
        description=(
            "On SIGTERM, how long open and queued requests may take to finish before exit; keep "
            "preStop + this under the pod's terminationGracePeriodSeconds."
        ),
    )

    # --- security ---------------------------------------------------------------------------
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description=(
            "Comma-separated API keys, each at least 16 printable ASCII characters without "
            "spaces; when set, /predict and /model need `Authorization: Bearer <key>` or "
            "`X-API-Key: <key>`. Probes and /metrics stay open. Never printed, not even when "
            "invalid."
        ),
    )
    metrics_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Serve /metrics on this separate port instead of the main one (0 = same port).",
    )
    grpc_port: int = Field(
        8001,
        ge=0,
        le=65535,
        description=(
            "Port of the Open Inference Protocol over gRPC (inference.GRPCInferenceService; "
            "0 = off). Same API keys, admission and deadlines as HTTP."
        ),
    )

    # --- prediction cache (app/cache/) --------------------------------------------------------
    cache_bytes: int = Field(
        64 * 1024 * 1024,
        ge=0,
        description=(
            "Bytes of the in-process prediction cache (an LRU keyed by the sha256 of the image's "
            "bytes and the model's identity; about 4.5 KB per image), held within the memory "
            "limit: the decode and body budgets are derived from what is left. 0 = off."
        ),
    )
    cache_redis_url: SecretStr = Field(
        SecretStr(""),
        description=(
            "A Redis shared by every replica as the cache's second tier: "
            "`redis://[[user]:password@]host:port/db`, `rediss://` for TLS. Empty = none. A "
            "Redis that is down or slow is a miss, never an error; a malformed URL stops "
            "start-up. Never printed with its password."
        ),
    )
    cache_redis_password: SecretStr = Field(
        SecretStr(""),
        description=(
            "The Redis password, when it is not in the URL (the chart takes it from a Secret); "
            "wins over the URL's."
        ),
    )
    cache_redis_timeout_ms: float = Field(
        20.0,
        gt=0,
        le=5000,
        description=(
            "Longest a Redis connect or command may take before it counts as a miss; after 3 "
            "failures in a row Redis is left alone for 2 s, then probed again."
        ),
    )
    cache_ttl_s: int = Field(
        86400, ge=1, le=31 * 86400, description="How long an entry lives in Redis, in seconds."
    )

    # --- URL fetching -----------------------------------------------------------------------
    url_fetch_timeout_s: float = Field(
        10.0, gt=0, le=300, description="Total time allowed to fetch an image URL."
    )
    url_max_redirects: int = Field(3, ge=0, le=20, description="Redirects followed per URL.")
    allow_private_urls: bool = Field(
        False,
        description=(
            "Allow URLs that resolve to loopback, private or link-local addresses. "
            "Cloud metadata addresses stay refused."
        ),
    )
    url_allowed_networks: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Comma-separated CIDRs exempt from the private-address block "
            "(e.g. an in-cluster image store)."
        ),
    )

    # --- shadow comparison (app/shadow/) ----------------------------------------------------
    shadow_url: str = Field(
        "",
        description=(
            "Base URL of the other model version's HTTP port (e.g. "
            "`http://rel-resnet-serving-canary:8000`): a sample of the images answered on "
            "/predict is sent there in the background (`X-Shadow: 1`) and the two top-1 classes "
            "are compared (`shadow_comparisons_total`); the answer is never delayed or changed. "
            "Empty = off."
        ),
    )
    shadow_percent: float = Field(
        0.0,
        ge=0,
        le=100,
        description="Percentage of /predict answers copied to SERVING_SHADOW_URL (0-100).",
    )
    shadow_concurrency: int = Field(
        4,
        ge=1,
        le=1024,
        description=(
            "Most shadow copies in flight; a sampled copy beyond them is not sent (counted "
            "`dropped`). Each holds its image's bytes until its call ends."
        ),
    )
    shadow_timeout_s: float = Field(
        5.0,
        gt=0,
        le=300,
        description="Longest a shadow call may take, connect to last byte (then `error`).",
    )

    @field_validator("url_allowed_networks", "api_keys", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        return checks.split_commas(value)

    @field_validator("url_allowed_networks")
    @classmethod
    def _check_networks(cls, value: list[str]) -> list[str]:
        return checks.networks(value)

    @field_validator("api_keys")
    @classmethod
    def _check_keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        return checks.api_keys(value)

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        ports = {"SERVING_PORT": self.port, "SERVING_METRICS_PORT": self.metrics_port,
                 "SERVING_GRPC_PORT": self.grpc_port}  # fmt: skip
        checks.ports_and_timeouts(ports, self.request_timeout_s, self.max_request_timeout_s)
        checks.engine_choices(self.backend, self.device, self.precision, self.compile)
        checks.built_model(self.model_dir, self.backend, self.device, self.compile)
        return self

    @field_validator("shadow_url")
    @classmethod
    def _check_shadow_url(cls, value: str) -> str:
        return checks.shadow_url(value)

    @field_validator("cache_redis_url")
    @classmethod
    def _check_redis_url(cls, value: SecretStr) -> SecretStr:
        if value.get_secret_value().strip():
            checks.redis_url(value.get_secret_value())
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("model_name")
    @classmethod
    def _known_model(cls, value: str) -> str:
        name = value.strip().lower()
        try:
            # Imported here, not at module import: torchvision is heavy and settings stay cheap.
            from torchvision import models
        except ImportError:
            # The CPU image has no torchvision: its build-time model's manifest says which
            # architecture it holds, and start-up stops when the name differs.
            if not checks.MODEL_NAME.fullmatch(name):
                raise ValueError(f"{value!r} is not a model name") from None
            return name
        known = models.list_models(module=models)
        if name not in known:
            raise ValueError(
                f"unknown torchvision classification model {value!r}; "
                f"try one of {', '.join(DOCUMENTED_MODELS)}"
            )
        return name

    @field_validator("oip_model_name")
    @classmethod
    def _check_oip_model_name(cls, value: str) -> str:
        value = value.strip()
        if value and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", value):
            raise ValueError(
                "a model name is 1-64 letters, digits, '.', '_' or '-', starting with a letter "
                "or digit (it is a path segment of /v2/models/<name>)"
            )
        return value

    @field_validator("model_version")
    @classmethod
    def _check_version(cls, value: str) -> str:
        return checks.model_version(value)

    @field_validator("model_weights")
    @classmethod
    def _strip_weights(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be empty: use DEFAULT, a weights name, a path or random")
        return value


def describe_validation_error(error: ValidationError) -> str:
    """One line naming each bad variable and its rule, for a start-up failure message; the
    value of a secret setting (any SecretStr field) is never part of it."""
    return describe_settings_error(error, Settings, ENV_PREFIX)


def env_default(field_name: str) -> str:
    """A setting's default as its environment variable would spell it (enums by value,
    booleans as true/false, lists comma-separated): for the README table, .env.example and the
    chart's ConfigMap test."""
    field = Settings.model_fields[field_name]
    factory = field.default_factory
    value: object = factory() if factory is not None else field.default  # type: ignore[call-arg]
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return "" if value is None else str(value)
