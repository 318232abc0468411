"""Inference backends: one module per engine behind the small protocol in `base`.

`app.model.runtime.ModelRuntime` chooses one once, at load, and the rest of the service only sees
its `logits` and `info`. Engines are imported lazily: `openvino` is imported only when the
OpenVINO backend is built.
"""
