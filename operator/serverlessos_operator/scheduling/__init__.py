"""Where processes run: the node ledger, pressure, placement, and rebalancing hot nodes."""
