"""What every call carries, whatever the transport that brought it (HTTP, the protocol's REST
routes, gRPC): its context, its request id, its API-key check and its deadline. Both transports
(app/api, app/oip) stand on this; it imports neither."""
