"""ServerlessOS node agent: runs, limits, observes and keeps alive processes on one node."""

__version__ = "0.1.0"
