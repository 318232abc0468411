"""What the service tells operators: Prometheus metrics (`metrics`, and `metrics_server` for
the separate metrics port) and structured logs (`logs`)."""
