"""The gRPC edge: the servicer, the status codes, and the server itself. No rules
live here; the messages' translation to records is ../convert.py (shared with
migration/, which speaks the same API to the other agent)."""
