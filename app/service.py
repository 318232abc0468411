"""The prediction service: bytes or a URL in, top-k classes out.

It wires the stages of the request path together (fetch -> decode + preprocess on a bounded
thread pool -> batcher -> model thread -> top-k) and owns their lifecycles and the readiness
state. It knows nothing of HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum

import torch

from app.batcher import Batcher
from app.config import Settings
from app.cpu import default_torch_threads, lower_thread_priority
from app.decoding import ImageDecoder, Preprocessed
from app.errors import NotReadyError
from app.metrics import Metrics
from app.preprocess import Preprocessor
from app.runtime import ModelRuntime, runs_on_gpu
from app.url_fetch import AddressPolicy, UrlFetcher
from app.weights import WeightsSource, load_model, resolve_weights

log = logging.getLogger(__name__)


class State(StrEnum):
    STARTING = "starting"
    LOADING = "loading"
    WARMING = "warming"
    READY = "ready"
    DRAINING = "draining"
    FAILED = "failed"


@dataclass(frozen=True)
class ClassScore:
    label: str
    class_id: int
    score: float


@dataclass(frozen=True)
class Timing:
    fetch_ms: float | None
    decode_ms: float
    queue_ms: float
    inference_ms: float


@dataclass(frozen=True)
class Prediction:
    predictions: list[ClassScore]
    timing: Timing
    batch_size: int
    image_format: str
    image_size: tuple[int, int]


class PredictionService:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.state = State.STARTING
        self.state_detail = "starting"
        self.source: WeightsSource | None = None
        self.runtime: ModelRuntime | None = None
        self.load_seconds: float | None = None
        self._preprocessor: Preprocessor | None = None
        self._batcher: Batcher | None = None
        self._labels: list[str] = []
        self.num_threads = settings.num_threads or default_torch_threads(
            device_type="cuda"
            if runs_on_gpu(settings.backend, settings.device, settings.precision, settings.compile)
            else "cpu"
        )
        self._model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self.decoder = ImageDecoder(
            workers=settings.decode_workers,
            max_pixels=settings.max_image_pixels,
            pixels_in_flight=settings.max_pixels_in_flight,
            metrics=metrics,
        )
        self.fetcher = UrlFetcher(
            policy=AddressPolicy(
                allow_private=settings.allow_private_urls,
                allowed_networks=settings.url_allowed_networks,
            ),
            timeout_s=settings.url_fetch_timeout_s,
            max_bytes=settings.max_upload_bytes,
            max_redirects=settings.url_max_redirects,
        )

    # --- lifecycle --------------------------------------------------------------------------

    def resolve(self) -> WeightsSource:
        """Cheap, synchronous: where the weights come from. Raises WeightsUnavailableError."""
        s = self.settings
        self.source = resolve_weights(
            s.model_name, s.model_weights, allow_download=s.allow_weights_download
        )
        return self.source

    @property
    def ready(self) -> bool:
        return self.state is State.READY

    def _set_state(self, state: State, detail: str) -> None:
        self.state = state
        self.state_detail = detail
        self.metrics.model_ready.set(1 if state is State.READY else 0)

    def _build_runtime(self) -> ModelRuntime:
        # Runs on the model thread, so torch's thread settings are made where inference runs,
        # and the priority set here is inherited by the OpenMP pool torch creates from it.
        assert self.source is not None
        if not lower_thread_priority(self.settings.model_thread_niceness):
            log.info("could not lower the model thread's priority on this platform")
        loaded = load_model(self.source, seed=self.settings.random_seed)
        return ModelRuntime(
            loaded,
            num_threads=self.num_threads,
            device=self.settings.device,
            precision=self.settings.precision,
            compile_model=self.settings.compile,
            backend=self.settings.backend,
        )

    def _warm_batch_sizes(self) -> list[int]:
        # Every size the batcher can produce: each new shape costs kernel selection (and a
        # compilation when compiled), which must not land on a user's request.
        return list(range(1, self.settings.max_batch_size + 1))

    async def load(self, on_fatal: Callable[[BaseException], None] | None = None) -> None:
        """Load and warm the model, then start taking requests. Meant to run as a background
        task so /health answers during a slow load; a failure calls `on_fatal`."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            source = self.source or self.resolve()
            self._set_state(State.LOADING, f"loading {source.model_name} ({source.weights_id})")
            runtime = await loop.run_in_executor(self._model_thread, self._build_runtime)
            self._preprocessor = Preprocessor.from_transforms(source.meta_weights.transforms())
            self._labels = runtime.labels
            self._set_state(State.WARMING, "warming up")
            crop = self._preprocessor.crop_size
            sizes = self._warm_batch_sizes()
            await loop.run_in_executor(self._model_thread, runtime.warm_up, sizes, crop)
            self.runtime = runtime
            self._batcher = Batcher(
                runtime.infer,
                executor=self._model_thread,
                max_batch_size=self.settings.max_batch_size,
                max_delay_s=self.settings.max_batch_delay_ms / 1000.0,
                max_queue_size=self.settings.max_queue_size,
                metrics=self.metrics,
                model_label=source.model_name,
            )
            self._batcher.start()
        except Exception as exc:
            self._set_state(State.FAILED, f"model load failed: {exc}")
            log.error("model load failed: %s", exc)
            if on_fatal is not None:
                on_fatal(exc)
            return
        self.load_seconds = time.perf_counter() - started
        info = runtime.info
        self.metrics.model_load_duration.set(self.load_seconds)
        self.metrics.model_info.labels(
            model=source.model_name,
            weights=source.weights_id,
            weights_source=source.kind.value,
            backend=info.backend,
            device=info.device,
            dtype=info.dtype,
            compiled=str(info.compiled).lower(),
        ).set(1)
        # Loaded and warmed: the RSS now is the baseline the decode budget is derived from.
        self.decoder.size_budget()
        self._set_state(State.READY, "ready")
        log.info(
            "model ready",
            extra={
                "model": source.model_name,
                "weights": source.weights_id,
                "weights_source": source.kind.value,
                "backend": info.backend,
                "device": info.device,
                "dtype": info.dtype,
                "threads": info.num_threads,
                "load_seconds": round(self.load_seconds, 3),
            },
        )
        if source.is_random:
            log.warning("serving RANDOM weights: predictions are meaningless (test/smoke mode)")

    def start_draining(self) -> None:
        """Readiness off and new work refused at once; queued work still completes."""
        if self.state is State.READY:
            self._set_state(State.DRAINING, "draining: shutting down")
        if self._batcher is not None:
            self._batcher.stop_accepting()

    async def close(self, timeout_s: float = 30.0) -> None:
        self.start_draining()
        if self._batcher is not None:
            await self._batcher.close(timeout_s)
        await self.fetcher.aclose()
        self.decoder.shutdown()
        self._model_thread.shutdown(wait=False, cancel_futures=True)

    # --- requests ---------------------------------------------------------------------------

    @property
    def batcher(self) -> Batcher | None:
        return self._batcher

    def require_ready(self) -> tuple[Batcher, Preprocessor]:
        """The batcher and preprocessor, or NotReadyError (503) while loading or draining."""
        if self.state is not State.READY or self._batcher is None or self._preprocessor is None:
            retry = "1" if self.state is State.DRAINING else "5"
            raise NotReadyError(
                f"the model is not ready ({self.state_detail})", headers={"Retry-After": retry}
            )
        return self._batcher, self._preprocessor

    def admit(self, deadline: float | None, *, images: int = 1) -> None:
        """Admission control at the door, before the body is read or decoded: refuse (503,
        Retry-After) when draining, when the queue is full, or when the expected wait already
        exceeds the request's deadline. Cheap; called first by every prediction route."""
        batcher, _ = self.require_ready()
        batcher.admit(deadline, ahead=self.decoder.pending + images - 1)

    def require_ready_model(self) -> tuple[ModelRuntime, WeightsSource, Preprocessor]:
        _, preprocessor = self.require_ready()
        assert self.runtime is not None
        assert self.source is not None
        return self.runtime, self.source, preprocessor

    async def preprocess(self, data: bytes, deadline: float | None = None) -> Preprocessed:
        _, preprocessor = self.require_ready()
        self.metrics.image_bytes.observe(len(data))
        result = await self.decoder.preprocess(data, preprocessor, deadline=deadline)
        self.metrics.image_decode_duration.observe(result.decode_s)
        return result

    async def classify(
        self,
        item: Preprocessed,
        *,
        top_k: int,
        deadline: float | None = None,
        fetch_s: float | None = None,
    ) -> Prediction:
        batcher, _ = self.require_ready()
        probs, timing = await batcher.submit(item.tensor, deadline=deadline)
        k = min(top_k, probs.shape[0])
        scores, indices = torch.topk(probs, k)
        predictions = [
            ClassScore(label=self._labels[i], class_id=i, score=float(p))
            for p, i in zip(scores.tolist(), indices.tolist(), strict=True)
        ]
        model = self.settings.model_name
        self.metrics.prediction_count.labels(model=model).inc()
        self.metrics.predicted_class.labels(model=model, class_name=predictions[0].label).inc()
        return Prediction(
            predictions=predictions,
            timing=Timing(
                fetch_ms=None if fetch_s is None else fetch_s * 1000.0,
                decode_ms=item.decode_s * 1000.0,
                queue_ms=timing.queue_s * 1000.0,
                inference_ms=timing.inference_s * 1000.0,
            ),
            batch_size=timing.batch_size,
            image_format=item.image_format,
            image_size=item.image_size,
        )

    async def predict_bytes(
        self, data: bytes, *, top_k: int, deadline: float | None = None
    ) -> Prediction:
        item = await self.preprocess(data, deadline)
        return await self.classify(item, top_k=top_k, deadline=deadline)

    async def predict_url(
        self, url: str, *, top_k: int, deadline: float | None = None
    ) -> Prediction:
        self.require_ready()
        outcome = "ok"
        started = time.perf_counter()
        try:
            fetched = await self.fetcher.fetch(url)
        except Exception as exc:
            outcome = getattr(exc, "code", "error")
            raise
        finally:
            self.metrics.url_fetch_duration.labels(outcome=outcome).observe(
                time.perf_counter() - started
            )
        item = await self.preprocess(fetched.data, deadline)
        return await self.classify(item, top_k=top_k, deadline=deadline, fetch_s=fetched.seconds)
