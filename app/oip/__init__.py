"""The Open Inference Protocol (KServe "V2" / Triton), REST and gRPC, for the served model.

- `model.OipModel`: all the protocol needs from the model (the app implements it);
- `tensors`: the inputs (`image` BYTES [N] / `tensor` FP32 [N,3,S,S]), the output (`scores`),
  their validation and Triton's classification strings;
- `rest_codec`, `grpc_codec`: the two transports' messages; `handler`: their shared operations;
- `errors`: one mapping of the service's errors to HTTP statuses and gRPC codes;
- `rest.oip_router`: the /v2 FastAPI routes; `grpc_server.start_grpc_server`: the gRPC server,
  with `grpc_calls` (API keys, deadlines, metrics, access log of each call);
- `grpc_predict_v2.proto` and its generated modules (scripts/gen-proto.sh).
"""
