"""The Open Inference Protocol over gRPC: `inference.GRPCInferenceService` on grpc.aio.

Handlers take and return bytes and parse the messages themselves, so a request that is not a
valid message is INVALID_ARGUMENT like any other bad input (gRPC's own deserializer would
answer INTERNAL). What every call goes through besides its own work (the request id, errors,
metrics, the access log, draining, API keys) are the server's interceptors
(app/oip/grpc/interceptors.py); the handlers here take the deadline, price the message in the
body memory budget before parsing it, and do the call's work.

`stop(grace)` drains: new calls fail at once with UNAVAILABLE (the health calls say not ready),
the calls in flight have `grace` seconds to finish, then the port closes.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from opentelemetry.sdk.trace import TracerProvider

from app.cache.policy import CachePolicy, from_cache_control
from app.calls.deadlines import deadline_after
from app.errors import InvalidRequestError
from app.memory.bodies import GRPC_HELD, BodyMemory
from app.oip import handler
from app.oip.grpc import codec as grpc_codec
from app.oip.grpc import grpc_predict_v2_pb2 as pb
from app.oip.grpc.interceptors import ApiKey, CallObserver, CallOutcome, Drain, ModelVersion
from app.oip.handler import ServerInfo
from app.oip.model import OipModel
from app.oip.tensors import CHANNELS, Limits

SERVICE = "inference.GRPCInferenceService"
# The health calls: no API key (as the HTTP probes need none), answered while draining.
OPEN_METHODS = frozenset(
    f"/{SERVICE}/{name}" for name in ("ServerLive", "ServerReady", "ModelReady")
)
# Room for the message framing and the JSON-free fields around the tensors.
_MESSAGE_OVERHEAD = 1024 * 1024


def max_message_bytes(limits: Limits, input_size: int) -> int:
    """The largest request: a full batch of the largest images (each with its 4-byte length),
    or a full FP32 batch, plus framing."""
    images = limits.max_images * (limits.max_image_bytes + 4)
    tensors = limits.max_images * CHANNELS * input_size * input_size * 4
    return max(images, tensors) + _MESSAGE_OVERHEAD


@dataclass(frozen=True)
class _Call:
    """One RPC: its request message type and its work."""

    name: str
    request_type: Any
    # (message, model, deadline, what the call's `cache-control` metadata lets the cache do)
    work: Callable[[Any, OipModel, float, CachePolicy], Awaitable[Any]]
    carries_images: bool = False  # its message is priced in the body memory budget


class _Service:
    def __init__(
        self,
        model_provider: Callable[[], OipModel],
        *,
        drain: Drain,
        limits: Limits,
        server_info: ServerInfo,
        default_timeout_s: float,
        max_timeout_s: float,
        body_memory: BodyMemory | None,
    ) -> None:
        self.model_provider = model_provider
        self.drain = drain
        self.body_memory = body_memory
        self.limits = limits
        self.server_info = server_info
        self.default_timeout_s = default_timeout_s
        self.max_timeout_s = max_timeout_s

    def handler(self) -> grpc.GenericRpcHandler:
        calls = (
            _Call("ServerLive", pb.ServerLiveRequest, self._server_live),
            _Call("ServerReady", pb.ServerReadyRequest, self._server_ready),
            _Call("ModelReady", pb.ModelReadyRequest, self._model_ready),
            _Call("ServerMetadata", pb.ServerMetadataRequest, self._server_metadata),
            _Call("ModelMetadata", pb.ModelMetadataRequest, self._model_metadata),
            _Call("ModelInfer", pb.ModelInferRequest, self._model_infer, True),
        )
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                call.name: grpc.unary_unary_rpc_method_handler(self._behavior(call))
                for call in calls
            },
        )

    def _behavior(self, call: _Call) -> Callable[[bytes, Any], Awaitable[bytes]]:
        async def behavior(data: bytes, context: Any) -> bytes:
            deadline = deadline_after(
                context.time_remaining(),
                default_s=self.default_timeout_s,
                max_s=self.max_timeout_s,
            )
            cache = from_cache_control(_metadata_value(context, "cache-control"))
            response = await self._serve(call, data, deadline, cache)
            return bytes(response.SerializeToString())

        return behavior

    async def _serve(self, call: _Call, data: bytes, deadline: float, cache: CachePolicy) -> Any:
        # gRPC has read the whole message before this runs (at most grpc.max_receive_message_
        # length); what parsing and decoding it will hold is reserved before it is parsed, so a
        # burst of large calls waits (or gets UNAVAILABLE) instead of all parsing at once.
        held = 0
        if self.body_memory is not None and call.carries_images:
            held = await self.body_memory.reserve(math.ceil(len(data) * GRPC_HELD), deadline)
        try:
            try:
                message = call.request_type.FromString(data)
            except DecodeError:
                raise InvalidRequestError(
                    f"the request is not a valid {call.request_type.DESCRIPTOR.full_name} message"
                ) from None
            return await call.work(message, self.model_provider(), deadline, cache)
        finally:
            if self.body_memory is not None:
                self.body_memory.release(held)

    async def _server_live(
        self, message: Any, model: OipModel, deadline: float, cache: CachePolicy
    ) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def _server_ready(
        self, message: Any, model: OipModel, deadline: float, cache: CachePolicy
    ) -> Any:
        return pb.ServerReadyResponse(ready=model.is_ready() and not self.drain.draining)

    async def _model_ready(
        self, message: Any, model: OipModel, deadline: float, cache: CachePolicy
    ) -> Any:
        ready = handler.model_ready(model, message.name, message.version)
        return pb.ModelReadyResponse(ready=ready and not self.drain.draining)

    async def _server_metadata(
        self, message: Any, model: OipModel, deadline: float, cache: CachePolicy
    ) -> Any:
        return grpc_codec.server_metadata(self.server_info)

    async def _model_metadata(
        self, message: Any, model: OipModel, deadline: float, cache: CachePolicy
    ) -> Any:
        meta = handler.model_metadata(model, message.name, message.version)
        return grpc_codec.model_metadata(meta)

    async def _model_infer(
        self, message: Any, model: OipModel, deadline: float, cache: CachePolicy
    ) -> Any:
        # The model first: an unknown model is NOT_FOUND whatever the inputs look like.
        handler.resolve(model, message.model_name, message.model_version)
        request = grpc_codec.decode_request(message, model, self.limits)
        result = await handler.infer(model, request, deadline, cache)
        return grpc_codec.encode_response(result)


def _metadata_value(context: Any, key: str) -> str | None:
    """A call's metadata value (keys arrive lower-case), or None."""
    for item in context.invocation_metadata() or ():
        if item.key == key:
            value = item.value
            return value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return None


class OipGrpcServer:
    """A started server: `port` is the bound port (useful when 0 asked for a free one)."""

    def __init__(self, server: grpc.aio.Server, drain: Drain, port: int) -> None:
        self._server = server
        self._drain = drain
        self.port = port

    @property
    def draining(self) -> bool:
        """True once `stop` has begun: new calls are refused."""
        return self._drain.draining

    async def stop(self, grace: float | None) -> None:
        """New calls fail at once with UNAVAILABLE; calls in flight get `grace` seconds
        (None: none), then the port closes."""
        await self._drain.start(grace)
        # gRPC's own grace lets the calls that just returned finish sending their answers.
        await self._server.stop(grace)


async def start_grpc_server(
    model_provider: Callable[[], OipModel],
    *,
    port: int,
    api_keys: Sequence[bytes],
    limits: Limits,
    server_info: ServerInfo,
    default_timeout_s: float,
    max_timeout_s: float,
    observer: CallObserver | None = None,
    body_memory: BodyMemory | None = None,
    host: str = "[::]",
    tracer_provider: TracerProvider | None = None,
) -> OipGrpcServer:
    """Start serving on `host:port` (0: a free port) in the running event loop.
    `tracer_provider`: trace every call (OpenTelemetry's gRPC server instrumentation, which
    honours a `traceparent` in the metadata), outermost, so the call's span is current in every
    interceptor inside it and in the call."""
    model = model_provider()
    size = max_message_bytes(limits, model.input_size)
    # The version that answers a call that names none (handler.resolve): the latest served.
    version = list(model.versions)[-1]
    drain = Drain(OPEN_METHODS)
    tracing: list[grpc.aio.ServerInterceptor] = []
    if tracer_provider is not None:
        from opentelemetry.instrumentation.grpc import aio_server_interceptor

        tracing.append(aio_server_interceptor(tracer_provider=tracer_provider))  # type: ignore[no-untyped-call]
    server = grpc.aio.server(
        # Outermost first: the outcome sees every refusal of the ones inside it.
        interceptors=[
            *tracing,
            CallOutcome(observer, OPEN_METHODS),
            ModelVersion(version),
            drain,
            ApiKey(api_keys, OPEN_METHODS),
        ],
        options=[
            ("grpc.max_receive_message_length", size),
            # Fail loudly when the port is taken instead of sharing it with another process.
            ("grpc.so_reuseport", 0),
        ],
    )
    service = _Service(
        model_provider,
        drain=drain,
        limits=limits,
        server_info=server_info,
        default_timeout_s=default_timeout_s,
        max_timeout_s=max_timeout_s,
        body_memory=body_memory,
    )
    server.add_generic_rpc_handlers((service.handler(),))
    # An IPv6 address (uvicorn's style, "::") needs brackets in a gRPC address.
    address = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
    bound = server.add_insecure_port(address)
    if not bound:
        raise RuntimeError(f"cannot listen for gRPC on {address}")
    await server.start()
    return OipGrpcServer(server, drain, bound)
