"""Benchmarks: each module here is a command that measures something docs/PERFORMANCE.md (or
docs/DEPLOYMENT.md) states; lib/ is what they share, experiments/ the one-off calibrations and
explorations whose question is answered. Run everything with `python -m bench.run_all`."""
