"""The Open Inference Protocol over gRPC: `inference.GRPCInferenceService` on grpc.aio.

Handlers take and return bytes and parse the messages themselves, so a request that is not a
valid message is INVALID_ARGUMENT like any other bad input (gRPC's own deserializer would
answer INTERNAL). Health calls (ServerLive, ServerReady, ModelReady) need no API key, as the
HTTP probes need none; metadata and inference do when keys are configured.

`stop(grace)` drains: new calls fail at once with UNAVAILABLE (the health calls say not ready),
the calls in flight have `grace` seconds to finish, then the port closes. (gRPC's own graceful
stop would answer calls that arrive meanwhile with CANCELLED, which clients do not retry.)
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from app.body_memory import GRPC_HELD, BodyMemory
from app.errors import (
    CLIENT_CLOSED,
    CLIENT_CLOSED_CODE,
    InvalidRequestError,
    NotReadyError,
    ServingError,
)

from . import grpc_codec, handler
from . import grpc_predict_v2_pb2 as pb
from .errors import describe
from .grpc_calls import (
    CallObserver,
    authenticate,
    call_deadline,
    log_call,
    request_id,
)
from .handler import ServerInfo
from .model import OipModel
from .tensors import CHANNELS, Limits

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
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
    """One RPC: its request message type, whether it needs an API key, and its work."""

    name: str
    request_type: Any
    needs_key: bool
    work: Callable[[Any, OipModel, float], Awaitable[Any]]
    carries_images: bool = False  # its message is priced in the body memory budget


class _Service:
    def __init__(
        self,
        model_provider: Callable[[], OipModel],
        *,
        api_keys: Sequence[bytes],
        limits: Limits,
        server_info: ServerInfo,
        default_timeout_s: float,
        max_timeout_s: float,
        observer: CallObserver | None,
        body_memory: BodyMemory | None,
    ) -> None:
        self.model_provider = model_provider
        self.body_memory = body_memory
        self.api_keys = list(api_keys)
        self.limits = limits
        self.server_info = server_info
        self.default_timeout_s = default_timeout_s
        self.max_timeout_s = max_timeout_s
        self.observer = observer
        self.draining = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def drain(self, grace: float | None) -> None:
        """Refuse new calls from now on; wait up to `grace` seconds for those in flight."""
        self.draining = True
        if grace is None or grace <= 0:
            return
        try:
            await asyncio.wait_for(self._idle.wait(), grace)
        except TimeoutError:
            log.warning("gRPC calls still in flight after the %.1fs grace period", grace)

    def handler(self) -> grpc.GenericRpcHandler:
        calls = (
            _Call("ServerLive", pb.ServerLiveRequest, False, self._server_live),
            _Call("ServerReady", pb.ServerReadyRequest, False, self._server_ready),
            _Call("ModelReady", pb.ModelReadyRequest, False, self._model_ready),
            _Call("ServerMetadata", pb.ServerMetadataRequest, True, self._server_metadata),
            _Call("ModelMetadata", pb.ModelMetadataRequest, True, self._model_metadata),
            _Call("ModelInfer", pb.ModelInferRequest, True, self._model_infer, True),
        )
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                call.name: grpc.unary_unary_rpc_method_handler(self._behavior(call))
                for call in calls
            },
        )

    def _behavior(self, call: _Call) -> Callable[[bytes, Any], Awaitable[bytes]]:
        route = f"/{SERVICE}/{call.name}"
        quiet = not call.needs_key

        async def behavior(data: bytes, context: Any) -> bytes:
            started = time.perf_counter()
            metadata = context.invocation_metadata()
            rid = request_id(metadata)
            status, error_code, grpc_status = 200, None, grpc.StatusCode.OK
            if self.observer is not None:
                self.observer.started(route)
            self.in_flight += 1
            self._idle.clear()
            try:
                try:
                    response = await self._serve(call, data, context, metadata)
                    context.set_trailing_metadata((("x-request-id", rid),))
                    return bytes(response.SerializeToString())
                except Exception as exc:
                    if not isinstance(exc, ServingError):
                        log.exception("gRPC %s failed", call.name, extra={"request_id": rid})
                    error = describe(exc)
                    status, error_code, grpc_status = (
                        error.http_status,
                        error.code,
                        error.grpc_status,
                    )
                    trailing = (*error.grpc_trailing_metadata(), ("x-request-id", rid))
                    await context.abort(grpc_status, error.message, trailing_metadata=trailing)
                    raise  # abort raises; this line only tells the type checker
            except asyncio.CancelledError:
                # The client went away, or its deadline passed, while the call was running.
                remaining = context.time_remaining()
                expired = remaining is not None and remaining <= 0
                status = 504 if expired else CLIENT_CLOSED
                error_code = "deadline_exceeded" if expired else CLIENT_CLOSED_CODE
                grpc_status = (
                    grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
                )
                raise
            finally:
                self.in_flight -= 1
                if self.in_flight == 0:
                    self._idle.set()
                seconds = time.perf_counter() - started
                if self.observer is not None:
                    self.observer.finished(route, status, seconds, error_code)
                log_call(
                    request_id=rid,
                    route=route,
                    status=status,
                    seconds=seconds,
                    error_code=error_code,
                    grpc_status=grpc_status.name,
                    quiet=quiet,
                    client=context.peer(),
                )

        return behavior

    async def _serve(self, call: _Call, data: bytes, context: Any, metadata: Any) -> Any:
        if self.draining and call.needs_key:
            raise NotReadyError("the server is shutting down; retry on another replica")
        if call.needs_key:
            authenticate(metadata, self.api_keys)
        deadline = call_deadline(
            context.time_remaining(), self.default_timeout_s, self.max_timeout_s
        )
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
            return await call.work(message, self.model_provider(), deadline)
        finally:
            if self.body_memory is not None:
                self.body_memory.release(held)

    async def _server_live(self, message: Any, model: OipModel, deadline: float) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def _server_ready(self, message: Any, model: OipModel, deadline: float) -> Any:
        return pb.ServerReadyResponse(ready=model.is_ready() and not self.draining)

    async def _model_ready(self, message: Any, model: OipModel, deadline: float) -> Any:
        ready = handler.model_ready(model, message.name, message.version)
        return pb.ModelReadyResponse(ready=ready and not self.draining)

    async def _server_metadata(self, message: Any, model: OipModel, deadline: float) -> Any:
        return grpc_codec.server_metadata(self.server_info)

    async def _model_metadata(self, message: Any, model: OipModel, deadline: float) -> Any:
        meta = handler.model_metadata(model, message.name, message.version)
        return grpc_codec.model_metadata(meta)

    async def _model_infer(self, message: Any, model: OipModel, deadline: float) -> Any:
        # The model first: an unknown model is NOT_FOUND whatever the inputs look like.
        handler.resolve(model, message.model_name, message.model_version)
        request = grpc_codec.decode_request(message, model, self.limits)
        result = await handler.infer(model, request, deadline)
        return grpc_codec.encode_response(result)


class OipGrpcServer:
    """A started server: `port` is the bound port (useful when 0 asked for a free one)."""

    def __init__(self, server: grpc.aio.Server, service: _Service, port: int) -> None:
        self._server = server
        self._service = service
        self.port = port

    @property
    def draining(self) -> bool:
        """True once `stop` has begun: new calls are refused."""
        return self._service.draining

    async def stop(self, grace: float | None) -> None:
        """New calls fail at once with UNAVAILABLE; calls in flight get `grace` seconds
        (None: none), then the port closes."""
        await self._service.drain(grace)
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
) -> OipGrpcServer:
    """Start serving on `host:port` (0: a free port) in the running event loop."""
    size = max_message_bytes(limits, model_provider().input_size)
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", size),
            # Fail loudly when the port is taken instead of sharing it with another process.
            ("grpc.so_reuseport", 0),
        ]
    )
    service = _Service(
        model_provider,
        api_keys=api_keys,
        limits=limits,
        server_info=server_info,
        default_timeout_s=default_timeout_s,
        max_timeout_s=max_timeout_s,
        observer=observer,
        body_memory=body_memory,
    )
    server.add_generic_rpc_handlers((service.handler(),))
    # An IPv6 address (uvicorn's style, "::") needs brackets in a gRPC address.
    address = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
    bound = server.add_insecure_port(address)
    if not bound:
        raise RuntimeError(f"cannot listen for gRPC on {address}")
    await server.start()
    return OipGrpcServer(server, service, bound)
