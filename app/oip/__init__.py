"""The Open Inference Protocol (KServe "V2" / Triton), REST and gRPC, for the served model.
It stands on the core (app/serving) and on what every call carries (app/calls); it imports
nothing from the HTTP API (app/api), which only mounts its REST routes.

- `model.OipModel`: all the protocol needs from the model; `served_model.ServedModel`: the
  served model as one (`RequestPipeline.score_many` on one admission ticket per call);
- `tensors`: the inputs (`image` BYTES [N] / `tensor` FP32 [N,3,S,S]), the output (`scores`),
  their validation and Triton's classification strings;
- `handler`: the operations both transports share; `errors`: one mapping of the service's
  errors to HTTP statuses and gRPC codes;
- `rest/`: `routes.oip_router` (the /v2 FastAPI routes), `codec`, `schemas`;
- `grpc/`: `server.start_grpc_server`, its `interceptors` (request id, errors, metrics, access
  log, draining, API keys), `codec`, and `grpc_predict_v2.proto` with its generated messages
  (scripts/gen-proto.sh).
"""
