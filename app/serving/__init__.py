"""The core of a request, transport-free: the service that wires the parts (`service`),
admission control (`admission`), the request pipeline (`pipeline`: fetch, decode, queue, model,
top-k; `score_many` for a request of several images) and the dynamic batcher (`batcher`)."""
