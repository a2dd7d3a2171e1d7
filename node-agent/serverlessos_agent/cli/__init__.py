"""Command line: `serverlessos-agent serve` (the daemon) and `serverlessos-agent ctl` (a client)."""
