"""The model host: everything about the model that is decided once, and its state.

It resolves the model (once: the build-time IR in SERVING_MODEL_DIR, checked against the
settings, or torchvision's weights, which need torch), plans the runtime (engine, device,
precision, threads: once), loads and warms the model on the one model thread, and tracks the
lifecycle state that /ready reports. What the HTTP layer may know of it is two snapshots:
`status()` (always) and `card()` (once ready). The request path uses `engine()`: the inference
function, the thread it must run on, the preprocessing and the labels. It knows nothing of HTTP,
batching or admission.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from app.errors import NotReadyError
from app.images.preprocess import Preprocessor
from app.model.cpu import lower_thread_priority
from app.model.ir.manifest import file_sha256
from app.model.ir.package import ModelPackage, Wanted, open_package
from app.model.runtime import ModelRuntime, RuntimePlan, plan_runtime
from app.model.spec import ModelSpec, looks_like_path
from app.settings.config import Settings
from app.telemetry.metrics import Metrics

if TYPE_CHECKING:
    from app.model.weights import WeightsSource

log = logging.getLogger(__name__)


class State(StrEnum):
    STARTING = "starting"
    LOADING = "loading"
    WARMING = "warming"
    READY = "ready"
    DRAINING = "draining"
    FAILED = "failed"


@dataclass(frozen=True)
class HostStatus:
    """What /ready shows: the state, why, and what is (being) loaded."""

    state: State
    detail: str
    model: str
    weights: str | None
    weights_source: str | None
    random_weights: bool | None
    backend: str | None
    device: str | None
    dtype: str | None
    model_source: str | None

    @property
    def ready(self) -> bool:
        return self.state is State.READY


@dataclass(frozen=True)
class ModelCard:
    """What /model shows once the model is ready."""

    model: str
    weights: str
    weights_source: str
    random_weights: bool
    labels: tuple[str, ...]
    preprocessor: Preprocessor
    backend: str
    device: str
    dtype: str
    compiled: bool
    num_threads: int
    max_batch_size: int
    model_source: str

    @property
    def num_classes(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Engine:
    """What the request pipeline needs of the loaded model."""

    runtime: ModelRuntime
    thread: ThreadPoolExecutor
    preprocessor: Preprocessor
    labels: tuple[str, ...]


class ModelHost:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.state = State.STARTING
        self.detail = "starting"
        self.load_seconds: float | None = None
        self._spec: ModelSpec | None = None
        self._package: ModelPackage | None = None
        self._source: WeightsSource | None = None
        self._plan: RuntimePlan | None = None
        self._runtime: ModelRuntime | None = None
        self._engine: Engine | None = None
        # The model thread: one worker, so the engine's thread pool never runs two forward
        # passes at once; loading and warm-up run on it too, where inference will run.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")

    # --- start-up ---------------------------------------------------------------------------

    def resolve(self) -> ModelSpec:
        """Which model, from where; synchronous, done once (the first caller wins: `python -m
        app` before binding the port, or the app's start-up). The build-time IR when
        SERVING_MODEL_DIR is set (its files hashed: a fraction of a second), else torchvision's
        weights (importing torch). Raises WeightsUnavailableError (ModelPackageError for an IR
        that is damaged or not the configured model)."""
        if self._spec is None:
            s = self.settings
            if s.model_dir:
                wanted = Wanted(s.model_name, s.model_weights, s.precision, s.random_seed)
                self._package = open_package(Path(s.model_dir), wanted)
                self._spec = self._package.spec
            else:
                from app.model.weights import describe, resolve_weights

                self._source = resolve_weights(
                    s.model_name, s.model_weights, allow_download=s.allow_weights_download
                )
                self._spec = describe(self._source)
        return self._spec

    def preprocessor(self) -> Preprocessor:
        """The model's own preprocessing (sizes, mean, std), known once it is resolved: before
        the model loads, so protocol metadata can be answered while it does."""
        return self.resolve().preprocessor

    def plan(self) -> RuntimePlan:
        if self._plan is None:
            s = self.settings
            self._plan = plan_runtime(
                backend=s.backend,
                device=s.device,
                precision=s.precision,
                compile_model=s.compile,
                num_threads=s.num_threads,
                built=bool(s.model_dir),
            )
        return self._plan

    def _set_state(self, state: State, detail: str) -> None:
        self.state = state
        self.detail = detail
        self.metrics.model_ready.set(1 if state is State.READY else 0)

    def _build(self, plan: RuntimePlan) -> ModelRuntime:
        # On the model thread: the priority set here is inherited by the OpenMP pool the engine
        # creates from it, so a busy model yields the CPU to the event loop and the decoders.
        if not lower_thread_priority(self.settings.model_thread_niceness):
            log.info("could not lower the model thread's priority on this platform")
        if self._package is not None:
            return ModelRuntime(self._package, num_threads=0, plan=plan)
        from app.model.weights import load_model

        assert self._source is not None
        return ModelRuntime(
            load_model(self._source, seed=self.settings.random_seed), num_threads=0, plan=plan
        )

    async def load(self) -> Engine:
        """Load and warm the model (every batch size the batcher can form: a new shape costs
        kernel selection that must not land on a user's request). Raises what loading raises;
        the state is then FAILED with the reason."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            spec, plan = self.resolve(), self.plan()
            what = "the build-time IR of " if spec.from_ir else ""
            self._set_state(State.LOADING, f"loading {what}{spec.model_name} ({spec.weights_id})")
            runtime = await loop.run_in_executor(self._thread, self._build, plan)
            preprocessor = self.preprocessor()
            self._set_state(State.WARMING, "warming up")
            sizes = list(range(1, self.settings.max_batch_size + 1))
            await loop.run_in_executor(self._thread, runtime.warm_up, sizes, preprocessor.crop_size)
        except Exception as exc:
            self._set_state(State.FAILED, f"model load failed: {exc}")
            log.error("model load failed: %s", exc)
            raise
        self._runtime = runtime
        self._engine = Engine(runtime, self._thread, preprocessor, tuple(runtime.labels))
        self.load_seconds = time.perf_counter() - started
        self._publish(spec, runtime)
        return self._engine

    def _publish(self, spec: ModelSpec, runtime: ModelRuntime) -> None:
        info = runtime.info
        assert self.load_seconds is not None
        self.metrics.model_load_duration.set(self.load_seconds)
        self.metrics.model_info.labels(
            model=spec.model_name,
            weights=spec.weights_id,
            weights_source=spec.weights_source,
            model_source=info.model_source,
            backend=info.backend,
            device=info.device,
            dtype=info.dtype,
            compiled=str(info.compiled).lower(),
        ).set(1)
        log.info(
            "model ready",
            extra={
                "model": spec.model_name,
                "weights": spec.weights_id,
                "weights_source": spec.weights_source,
                "model_source": info.model_source,
                "backend": info.backend,
                "device": info.device,
                "dtype": info.dtype,
                "threads": info.num_threads,
                "load_seconds": round(self.load_seconds, 3),
            },
        )
        if spec.random_weights:
            log.warning("serving RANDOM weights: predictions are meaningless (test/smoke mode)")

    def mark_ready(self) -> None:
        """Called once the request pipeline runs on the loaded model."""
        if self.state is State.WARMING:
            self._set_state(State.READY, "ready")

    def drain(self) -> None:
        """Readiness off at once (SIGTERM, shutdown)."""
        if self.state is State.READY:
            self._set_state(State.DRAINING, "draining: shutting down")

    def close(self) -> None:
        self.drain()
        self._thread.shutdown(wait=False, cancel_futures=True)

    # --- what others may see ----------------------------------------------------------------

    def require_ready(self) -> Engine:
        """The engine, or NotReadyError (503 with Retry-After) while loading or draining."""
        if self.state is not State.READY or self._engine is None:
            retry = "1" if self.state is State.DRAINING else "5"
            raise NotReadyError(
                f"the model is not ready ({self.detail})", headers={"Retry-After": retry}
            )
        return self._engine

    def status(self) -> HostStatus:
        spec = self._spec
        info = self._runtime.info if self._runtime is not None else None
        return HostStatus(
            state=self.state,
            detail=self.detail,
            model=self.settings.model_name,
            weights=spec.weights_id if spec else None,
            weights_source=spec.weights_source if spec else None,
            random_weights=spec.random_weights if spec else None,
            backend=info.backend if info else None,
            device=info.device if info else None,
            dtype=info.dtype if info else None,
            model_source=info.model_source if info else None,
        )

    def card(self) -> ModelCard:
        """The loaded model's description; NotReadyError before it is ready."""
        engine = self.require_ready()
        spec = self.resolve()
        info = engine.runtime.info
        return ModelCard(
            model=spec.model_name,
            weights=spec.weights_id,
            weights_source=spec.weights_source,
            random_weights=spec.random_weights,
            labels=engine.labels,
            preprocessor=engine.preprocessor,
            backend=info.backend,
            device=info.device,
            dtype=info.dtype,
            compiled=info.compiled,
            num_threads=info.num_threads,
            max_batch_size=self.settings.max_batch_size,
            model_source=info.model_source,
        )

    @property
    def weights_id(self) -> str:
        return self._spec.weights_id if self._spec else "unknown"

    def weights_fingerprint(self) -> str:
        """The weights as a cache must tell them apart: torchvision's weights name, the sha256
        of a state-dict file (a file keeps its name when retrained), or `random:<seed>`. Reads
        a state-dict file whole when the weights came from one without a build-time manifest:
        call it off the event loop."""
        spec = self.resolve()
        manifest = self._package.manifest if self._package is not None else None
        if spec.random_weights:
            seed = manifest.random_seed if manifest is not None else self.settings.random_seed
            return f"random:{seed}"
        if manifest is not None:
            return (
                f"sha256:{manifest.weights_sha256}" if manifest.weights_sha256 else spec.weights_id
            )
        if looks_like_path(self.settings.model_weights):
            return f"sha256:{file_sha256(Path(self.settings.model_weights))}"
        return spec.weights_id
