"""Running processes on this node: start, exits and restarts, stop, limits and
leases, re-adoption after an agent restart, freezing for a migration and CRIU's
checkpoint and restore, and the fork server and shims that run them (nothing here
knows gRPC)."""
