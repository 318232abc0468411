"""The serving core, assembled: the model host, the request pipeline and the admission door,
and their lifecycle in one place (start, drain, close). It knows nothing of HTTP; the HTTP
app (app/main.py) and the gRPC server hold one `Service` and reach its parts through it.
"""

from __future__ import annotations

import asyncio
import logging

from opentelemetry import trace

from app.cache.cache import build_cache
from app.cache.identity import ModelIdentity
from app.images.decoder import ImageDecoder
from app.images.fetch import AddressPolicy, UrlFetcher
from app.memory.bodies import BodyMemory
from app.memory.cgroup import cgroup_memory_limit, resident_bytes
from app.model.host import Engine, ModelHost
from app.serving.admission import Admission
from app.serving.pipeline import RequestPipeline
from app.settings.config import Settings
from app.telemetry.metrics import Metrics

log = logging.getLogger(__name__)


class Service:
    def __init__(
        self, settings: Settings, metrics: Metrics, tracer: trace.Tracer | None = None
    ) -> None:
        """`tracer`: the app's (app/telemetry/tracing.py); none: no spans."""
        self.settings = settings
        self.metrics = metrics
        tracer = tracer or trace.NoOpTracer()
        self.tracer = tracer
        self.host = ModelHost(settings, metrics)
        self.decoder = ImageDecoder(
            workers=settings.decode_workers,
            max_pixels=settings.max_image_pixels,
            pixels_in_flight=settings.max_pixels_in_flight,
            metrics=metrics,
            tracer=tracer,
        )
        self.body_memory = BodyMemory(settings.max_body_bytes_in_flight, metrics, tracer)
        fetcher = UrlFetcher(
            policy=AddressPolicy(
                allow_private=settings.allow_private_urls,
                allowed_networks=settings.url_allowed_networks,
            ),
            timeout_s=settings.url_fetch_timeout_s,
            max_bytes=settings.max_upload_bytes,
            max_redirects=settings.url_max_redirects,
        )
        self.cache = build_cache(
            capacity_bytes=settings.cache_bytes,
            redis_url=settings.cache_redis_url.get_secret_value(),
            redis_password=settings.cache_redis_password.get_secret_value(),
            timeout_s=settings.cache_redis_timeout_ms / 1000.0,
            ttl_s=settings.cache_ttl_s,
            metrics=metrics,
        )
        self.pipeline = RequestPipeline(
            decoder=self.decoder,
            cache=self.cache if self.cache.enabled else None,
            fetcher=fetcher,
            body_memory=self.body_memory,
            metrics=metrics,
            model_name=settings.model_name,
            max_batch_size=settings.max_batch_size,
            max_batch_delay_s=settings.max_batch_delay_ms / 1000.0,
            tracer=tracer,
        )
        self.admission = Admission(
            self.host, max_queue_size=settings.max_queue_size, metrics=metrics, tracer=tracer
        )

    async def start(self) -> None:
        """Load and warm the model, then take requests. Raises what loading raises (the host's
        state is then FAILED, which /ready reports)."""
        # First: a Redis that does not answer is a warning in the log before the model loads.
        await self.cache.start()
        engine = await self.host.load()
        if self.cache.enabled:
            # Off the event loop: the weights' identity may mean hashing a state-dict file.
            identity = await asyncio.to_thread(self._identity, engine)
            self.cache.bind(identity)
        self.admission.attach(self.pipeline.start(engine))
        # Loaded and warmed: the RSS now is the baseline both memory budgets are derived from,
        # with the in-process cache counted as full already (it fills as requests come).
        limit = cgroup_memory_limit()
        rss = resident_bytes()
        baseline = None if rss is None else rss + self.cache.capacity_bytes
        self.decoder.size_budget(limit=limit, baseline=baseline)
        self.body_memory.size(limit=limit, baseline=baseline)
        self.host.mark_ready()

    def _identity(self, engine: Engine) -> ModelIdentity:
        info = engine.runtime.info
        return ModelIdentity(
            model=self.settings.model_name,
            weights=self.host.weights_fingerprint(),
            precision=info.dtype,
            backend=info.backend,
            preprocessing=engine.preprocessor.to_dict(),
            num_classes=len(engine.labels),
        )

    def drain(self) -> None:
        """Readiness off and new work refused at once; queued work still completes."""
        self.host.drain()
        self.pipeline.stop_accepting()

    async def close(self, timeout_s: float) -> None:
        self.drain()
        await self.pipeline.close(timeout_s)
        await self.cache.close()
        self.host.close()
