"""Experiments: one-off calibrations and explorations whose question is answered. Each stays
runnable (`python -m bench.experiments.<name>`) so that what it found can be measured again, and
its recorded result stays in bench/results/; the benchmarks re-run to back a current figure are
in bench/ itself.

- body_memory: what a request body holds in the server per byte, route by route; gave
  app/memory/bodies.py its factors (SINGLE_IMAGE_HELD, BATCH_HELD, PROTOCOL_HELD).
- decode_memory: the real peak of decoding one max-pixel image, per decoder; gave
  app/images/decode_cost.py its table (tests/images/test_decode_cost.py holds it to the result).
- explore_paths: faster torch CPU paths than the shipped ones (bf16, torch.compile, oneDNN
  graph, int8 PT2E); bf16 ships, compile is opt-in, int8 ships through OpenVINO instead.
- openvino_hints: OpenVINO's LATENCY against its THROUGHPUT hint; the default stays LATENCY
  with one stream.
- profile_request (+ flamegraph): where one request's time goes, under py-spy; found the
  dependencies' thread round trips (fixed), and that the rest is the forward pass.
"""
