"""Benchmarks: load generator, baseline server, in-process ceilings, the sweep that runs them all.

Run everything with `python -m bench.run_all` (see docs/PERFORMANCE.md)."""
