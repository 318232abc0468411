"""Moved to bench/lib/images.py; this name stays until bench/rolling.py imports it from there."""

from bench.lib.images import large_jpeg, sample_photos, small_jpeg

__all__ = ["large_jpeg", "sample_photos", "small_jpeg"]
