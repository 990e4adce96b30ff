"""What operators see: Prometheus metrics, health endpoints, structured logs."""
