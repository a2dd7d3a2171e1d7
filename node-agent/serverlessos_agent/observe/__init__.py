"""What the agent measures and reports: node and process samples, network counters,
Prometheus metrics, and the ServerlessNode status (registration is the only part
that talks to Kubernetes)."""
