"""The gRPC edge: translation between the API and the domain, the status codes,
and the server itself. No rules live here."""
