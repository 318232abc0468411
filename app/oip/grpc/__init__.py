"""The protocol over gRPC: the server (`server`), its interceptors (`interceptors`), the
messages (`codec`) and the generated protobuf module."""
