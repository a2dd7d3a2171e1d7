"""The outside world as the domain code uses it: Kubernetes writes and Events, agent
channels, the agent DaemonSet, metrics, and per-object isolation of failures."""
