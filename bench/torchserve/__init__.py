"""TorchServe as a benchmark peer (optional: bench/torchserve/setup.sh installs it)."""
