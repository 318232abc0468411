"""The prediction cache: an image's class scores kept under the sha256 of its bytes and the
identity of the model that scored them, in process (an LRU bounded in bytes) and, when a Redis
is configured, shared by every replica. `RequestPipeline` consults it between reading an
image's bytes and decoding them; nothing here knows HTTP or the protocol."""
