"""The model: its weights (`weights`, and `bake` for the image build), the runtime that owns it
and torch's threads (`runtime`, `options`, `cpu`), its backends (`backends/`: OpenVINO, torch,
int8), and the host that loads it and reports its state (`host`). Knows tensors, nothing of HTTP
or of batching policy."""
