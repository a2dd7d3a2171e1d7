"""Rebalancing: moving work off hot nodes by live migration, with brakes."""
