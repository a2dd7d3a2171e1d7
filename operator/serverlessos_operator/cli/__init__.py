"""Command-line tools: `kubectl sos`."""
