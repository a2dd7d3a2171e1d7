"""Where processes run: the node ledger, pressure, constraints and placement (pure code)."""
