"""Running processes on this node: their records, start, exits and restarts, stop,
limits and leases, re-adoption after an agent restart, freezing for a migration,
and the fork server and shims that run them (nothing here knows gRPC)."""
